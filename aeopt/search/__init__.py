"""The Optuna side: storage (built once), studies, space, samplers and pruners, objectives, worker, launch,
export, artifacts, dashboard and quickstart. With `aeopt.cli`, the only package that imports optuna."""
