"""Errors that end a command with one clear line and exit code 2."""

from __future__ import annotations

# Exit status of `famerec train` and `famerec experiment run` when --time-limit paused them
# between epochs: nothing failed, the same command (train: with --resume) continues. 75 is
# sysexits' EX_TEMPFAIL, "try again later", which batch schedulers may requeue on.
PAUSED = 75


class FamerecError(Exception):
    """A problem with the user's input or configuration, reported without a traceback."""


class ConfigError(FamerecError):
    """An invalid option or combination of options."""


class DataError(FamerecError):
    """Unreadable or unusable input data; names the file and line where there is one."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
