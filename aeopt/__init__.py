"""aeopt: Optuna hyperparameter optimization for the homework's autoencoders."""

from __future__ import annotations

__version__ = "0.1.0"
