"""TensorBoard sink: gradvar's scalars and events in a TensorBoard run, against the optimizer step.

    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[TensorBoardSink("runs/x/tensorboard")])
    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[TensorBoardSink(writer=my_summary_writer)])

SummaryWriter queues events and writes them from its own thread; the sink flushes it once per monitor flush,
so a live TensorBoard shows each flushed step. A step's scalars go into one event (a summary holds any number of
values), not one each as `add_scalar` makes them: the writer's queue holds 10 events, so an event per value would make
the training thread wait on the writer's thread for every value (~130 us each; the sink's time per step:
`python benchmarks/monitor_own_time.py --mode paper_tb`).
"""

from __future__ import annotations

from itertools import groupby

from .base import Sink


class TensorBoardSink(Sink):
    def __init__(self, log_dir=None, *, writer=None):
        """log_dir: where a SummaryWriter of the sink's own is opened (at the first flush, on rank 0 only);
        writer: your SummaryWriter (or anything with add_scalar/add_text/flush) instead: it is flushed, never
        closed."""
        if (log_dir is None) == (writer is None):
            raise ValueError("TensorBoardSink needs log_dir or writer (one of them)")
        self.log_dir, self.writer, self._owns = log_dir, writer, writer is None

    def _open(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        return self.writer

    def scalars(self, values) -> None:
        writer = self._open()
        file_writer = getattr(writer, "file_writer", None)
        if not hasattr(file_writer, "add_summary"):  # a writer that is not a SummaryWriter: its own add_scalar
            for step, tag, value in values:
                writer.add_scalar(tag, value, step, new_style=True, double_precision=True)
            return
        from torch.utils.tensorboard.summary import Summary, scalar

        for step, rows in groupby(values, key=lambda v: v[0]):
            # torch's own scalar value, as add_scalar writes it: float64 tensors, so the dashboard holds the
            # records' values exactly (simple_value is float32)
            parts = [scalar(tag, value, new_style=True, double_precision=True).value[0] for _, tag, value in rows]
            file_writer.add_summary(Summary(value=parts), step)

    def events(self, events) -> None:
        add = self._open().add_text
        for step, kind, message in events:
            add(f"gradvar/events/{kind}", message, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            if self._owns:
                self.writer.close()
                self.writer = None
            else:
                self.writer.flush()
