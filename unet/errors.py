"""Errors that a user can fix: the CLI prints them as one line and exits non-zero.

:func:`user_message` is the one place that decides which exceptions are the
user's to fix (bad input, the environment: a path that is a file, no
permission, a full disk, too little memory) and words them as one line; every
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import warnings


class UserError(Exception):
    """Bad input, configuration or environment, with a message naming the file and the problem."""


class InputFileError(UserError, ValueError):
    """An input file is missing, unreadable or has unexpected content."""

    def __init__(self, path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(UserError):
    """An invalid configuration: unknown key, wrong type or bad value."""


class OutputFileError(UserError, OSError):
    """An output cannot be written: a folder in the way, no permission, a full disk."""

    def __init__(self, path, problem: str):
        self.path = path
        self.problem = problem
        UserError.__init__(self, f"{path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


#: memory hints by command: what to lower
_MEMORY_HINT = "lower the tile size, batch size or memory limit (--tile-size, --batch-size, --memory-limit)"


def user_message(err: BaseException) -> str | None:
    """One line describing ``err`` if the user can fix it, else None (a bug: keep the traceback).

    The user's: :class:`UserError`; :class:`OSError` from the environment (named by its
    file when it has one); running out of memory (``MemoryError``, torch's
    ``OutOfMemoryError`` and CPU allocator failures), which is the model's size
    against the machine's memory, never a problem of an input file.
    """
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
            isinstance(err, RuntimeError) and ("out of memory" in str(err) or "not enough memory" in str(err))):
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"out of memory ({detail[:200]}); {_MEMORY_HINT}"
    if isinstance(err, OSError):
        problem = (err.strerror or str(err) or type(err).__name__).rstrip(".")
        return f"{err.filename}: {problem}" if err.filename else problem
    return None


class UnetWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


def warn(message: str) -> None:
    """Warn the user in one line (``unet CMD: warning: ...`` on the command line)."""
    warnings.warn(message, UnetWarning, stacklevel=2)
