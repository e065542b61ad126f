"""`python -m aeopt`: the `aeopt` command."""

import sys

try:
    from aeopt.cli import entrypoint
except KeyboardInterrupt:  # Ctrl-C while torch and optuna import: the CLI's one line, not a traceback
    print("stopped by signal SIGINT", file=sys.stderr)
    sys.exit(130)

entrypoint()
