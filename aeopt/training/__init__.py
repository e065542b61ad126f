"""Training: datasets as whole tensors, the model kinds, losses, the engine, k-fold CV, the supervised
engine and checkpoints. Knows nothing of Optuna or plotting; callers plug in through `on_epoch`."""
