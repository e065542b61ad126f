from aeopt.cli import entrypoint

entrypoint()
