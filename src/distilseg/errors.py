"""Errors a user can act on.

The CLI prints these as one line (no traceback unless ``--debug``) and exits with ``exit_code``.
Anything that is *not* a ``DistilsegError`` is a bug and keeps its traceback.
"""
from __future__ import annotations


class DistilsegError(Exception):
    """Base class: a problem with the user's input, files or settings."""

    exit_code: int = 1


class UsageError(DistilsegError):
    """Wrong arguments: unknown model/dataset, non-positive sizes, mismatched class counts."""

    exit_code = 2


class SettingError(UsageError, ValueError):
    """A setting out of its type or range (``TrainConfig(epochs=-1)``); a ``ValueError`` for Python callers."""


class DataError(DistilsegError):
    """A dataset file is missing, unreadable or holds values that are not classes."""

    exit_code = 1


class CheckpointError(DistilsegError):
    """A checkpoint or model artifact is missing, malformed or unsafe to load."""

    exit_code = 1


class TrainingError(DistilsegError):
    """Training cannot go on (non-finite loss, out of memory)."""

    exit_code = 1


class OutputError(DistilsegError):
    """An output file cannot be written (read-only folder, disk full, a file where a folder should be)."""

    exit_code = 1


class RunInterrupted(DistilsegError):
    """A run stopped by SIGTERM / SIGINT: exit 128 + signal number; the CLI adds how to continue it."""

    def __init__(self, message: str, signum: int, resumable: bool = True) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        self.resumable = resumable
