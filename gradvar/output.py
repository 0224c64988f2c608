"""A flush's write path: the buffered statistics combined across ranks (collective under DDP), the rows built
and written on rank 0, then the same host rows handed to the dashboards."""

from __future__ import annotations

import torch

from .combine import combine
from .records import RecordWriter
from .sinks import SinkSet
from .sinks import build as build_sinks


class Output:
    """The records writer and the dashboards of one monitor (both None/empty off rank 0)."""

    def __init__(self, run_dir, rows, run, world_size: int, rank: int, resume_step, sinks, log_note):
        self.rows, self.run, self.world_size, self.rank = rows, run, world_size, rank
        self.writer = RecordWriter(run_dir, resume_step=resume_step) if rank == 0 else None
        self.sinks = SinkSet(build_sinks(sinks, run_dir) if rank == 0 else (), log_note)

    def flush(self, buffer, side, quantities, layers_every: int, note_once) -> None:
        """buffer: (host meta, {name: Stat}) per step; side: (table, row) rows whose tensors combine too."""
        sent: dict[str, list[dict]] = {}
        if buffer:
            for table, rows in self._tables(buffer, side, quantities, layers_every, note_once).items():
                self.writer.append(table, rows)
                sent.setdefault(table, []).extend(rows)
        if self.rank != 0:
            return
        for table, row in self.run.take_waiting():
            self.writer.append(table, row)
            sent.setdefault(table, []).append(row)
        try:
            self.writer.flush()
        finally:  # the host rows the records got, to the dashboards (a failing one is dropped, never raises)
            self.sinks.write(sent)

    def _tables(self, buffer, side, quantities, layers_every, note_once) -> dict:
        # every rank takes part in the combine; only rank 0 builds rows from it
        slots = [(r, k) for _, r in side for k, v in r.items() if isinstance(v, torch.Tensor)]
        stats = [stats for _, stats in buffer]
        raw, values = combine(stats, self.world_size, self.rank, extra=[r[k] for r, k in slots])
        for (r, k), v in zip(slots, values):
            r[k] = v
        if self.rank != 0:
            return {}
        tables = self.rows.build([m for m, _ in buffer], raw, quantities, side, layers_every)
        for reason, msg in self.rows.notes:
            note_once(reason, msg)
        return tables
