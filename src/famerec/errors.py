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
            shown = printable(path, limit=None)
            where = f"{shown}:{line}: " if line is not None else f"{shown}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class InUseError(FamerecError):
    """Another famerec process holds the lock of a run directory (or of a spec's runs)."""


def printable(text: object, limit: int | None = 200) -> str:
    """`text` fit to show in a one-line error: characters that are not printable (control
    characters such as ESC or a newline, bidirectional overrides, undecodable bytes) written as
    repr writes them (\\x1b, \\n, \\u202e), and with `limit`, cut to that many characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    if limit is not None and len(shown) > limit:
        return shown[:limit] + f"... ({len(shown) - limit} more characters)"
    return shown
