"""The trainer's user-facing error: a config that cannot run."""


class ConfigError(ValueError):
    """A config that cannot run; the message says which field and why (one line, no traceback)."""
