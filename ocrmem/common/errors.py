"""Errors caused by input or config, not by a bug: the CLI prints their message and exits 2.

Raise `UserError` (a ValueError) where a file, a record or a setting is wrong; its message says
what was wrong, where (file and line, or the params field) and how to fix it. `ocrmem` catches it
once, in `cli.main`, and prints it without a traceback; tracebacks are kept for bugs.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserError(ValueError):
    """Bad input or config: the message is all the user needs (no traceback)."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file the user must make first (run a stage, pass a path): still a FileNotFoundError."""


def read_utf8(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file; a file in another encoding is refused naming its line and the fix."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {col}): save the file as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 {path} > {Path(path).stem}.utf8{Path(path).suffix}`"
        ) from None


class DiskFullError(UserError, OSError):
    """A write that found no space (ENOSPC, EDQUOT): nothing half-written is left; the message names the path,
    the bytes it needed and the bytes free. Still an OSError."""


class ConfigError(UserError):
    """A config that must not start. `messages` holds one line per bad field."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("invalid config:\n  " + "\n  ".join(messages))
