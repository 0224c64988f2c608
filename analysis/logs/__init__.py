"""Reading users' own training logs, one small reader per format; `load_log(path)` picks the reader."""

from ..errors import LogError
from .readers import from_frame, load_log
from .table import ALIASES, FORMATS, LogData, canonical_names, snake
from .tfevents import find_event_files, read_scalars

__all__ = [
    "ALIASES",
    "FORMATS",
    "LogData",
    "LogError",
    "canonical_names",
    "find_event_files",
    "from_frame",
    "load_log",
    "read_scalars",
    "snake",
]
