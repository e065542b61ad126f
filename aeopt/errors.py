"""The small family of errors the CLI turns into one actionable line (exit code 2)."""

from __future__ import annotations


class AeoptError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""

    exit_code = 2


class ConfigError(AeoptError):
    """A run config or study spec that is missing, malformed or invalid."""


class DataNotFoundError(AeoptError):
    """A dataset that is neither on disk nor downloadable."""


class StudyError(AeoptError):
    """A study that does not exist, already exists, or holds nothing to use."""


class StorageError(AeoptError):
    """A storage URL that cannot be opened."""
