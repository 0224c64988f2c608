"""The errors analysis raises: each message is one line a user can act on."""

from __future__ import annotations


class LogError(ValueError):
    """A log that cannot be read; the message is one line naming the file and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class NotARunDirError(ValueError):
    """The path is not a gradvar run directory (no records/ folder)."""
