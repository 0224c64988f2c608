"""TensorBoard sink: gradvar's scalars and events in a TensorBoard run, against the optimizer step.

    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[TensorBoardSink("runs/x/tensorboard")])
    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[TensorBoardSink(writer=my_summary_writer)])

SummaryWriter queues events and writes them from its own thread; the sink flushes it once per monitor flush,
so a live TensorBoard shows each flushed step.
"""

from __future__ import annotations

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
        add = self._open().add_scalar
        for step, tag, value in values:
            # float64 tensors: the dashboard holds the records' values exactly (simple_value is float32)
            add(tag, value, step, new_style=True, double_precision=True)

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
