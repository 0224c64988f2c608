"""What every sink shares: the rows of one flush in, nothing out; and the guard that drops a failing sink.

A sink receives, on rank 0 at each flush, the rows the flush has just written to the records
(`{table: [row dict, ...]}`, host values): it computes nothing and reads nothing from the device.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

from . import tags


class Sink:
    """Base class: subclasses implement `scalars` and `events` (and `flush`, `close` where the backend has them).
    Nothing is opened before the first write, so a sink built on every rank opens only where it writes (rank 0)."""

    def write(self, tables: dict[str, list[dict]]) -> None:
        values = tags.scalars(tables)
        if values:
            self.scalars(values)
        evs = tags.events(tables)
        if evs:
            self.events(evs)
        self.flush()

    def scalars(self, values: list[tuple[int, str, float]]) -> None:
        raise NotImplementedError

    def events(self, events: list[tuple[int, str, str]]) -> None:
        """Events are optional: a sink that has no place for text ignores them."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class SinkSet:
    """The monitor's sinks. A sink that raises is dropped after one warning (and one `note` through `on_drop`):
    a dashboard failing (disk, network, a closed run) never stops training or touches the records."""

    def __init__(self, sinks, on_drop: Callable[[str], None] | None = None):
        self.sinks = list(sinks or ())
        self.on_drop = on_drop

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def write(self, tables: dict[str, list[dict]]) -> None:
        if any(tables.values()):
            self._each(lambda s: s.write(tables))

    def close(self) -> None:
        self._each(lambda s: s.close())
        self.sinks = []

    def _each(self, fn) -> None:
        for sink in list(self.sinks):
            try:
                fn(sink)
            except Exception as exc:  # any backend error: the records are written already
                self.sinks.remove(sink)
                msg = (
                    f"sink {type(sink).__name__} failed ({type(exc).__name__}: {exc}) and was dropped; the "
                    "records are complete, the dashboard stops here"
                )
                warnings.warn(f"gradvar: {msg}", stacklevel=2)
                with contextlib.suppress(Exception):
                    sink.close()
                if self.on_drop is not None:
                    self.on_drop(msg)
