"""Errors a user can cause. The core raises these; only the CLI turns them into one line + exit code.

Each class carries the process exit code and an optional hint (what to do next). This module imports
nothing so every layer can use it.
"""

from __future__ import annotations


class SrplError(Exception):
    """Base of every expected failure: printed as ``error: <message>`` without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SrplError):
    """Flags that do not fit together, or a value out of range."""

    exit_code = 2


class DataError(SrplError):
    """Bad input data: unreadable audio, wrong folder layout, too few clips, degenerate arrays."""

    exit_code = 3


class AudioError(DataError):
    """One clip cannot be used; ``path`` names it so batch commands can report and go on."""

    def __init__(self, path: object, message: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint)
        self.path = path
        self.reason = message


class StateError(SrplError):
    """Missing workspace state: nothing enrolled, no tuned model, unknown profile."""

    exit_code = 4


class NotFittedError(StateError):
    """An estimator was used before ``fit`` (scikit-learn's NotFittedError idea)."""


class ModelUnavailableError(SrplError):
    """A model or dataset is not cached locally and cannot be fetched (offline, hub unreachable)."""

    exit_code = 5


class WorkspaceError(SrplError):
    """Workspace I/O failed or its lock could not be taken in time."""

    exit_code = 6
