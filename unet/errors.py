"""Errors that a user can fix: the CLI prints them as one line and exits non-zero."""


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
