"""Live dashboards: the monitor hands each flush's rows to its sinks (rank 0 only), beside the records.

    from gradvar.sinks import TensorBoardSink, WandbSink
    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[TensorBoardSink("runs/x/tensorboard"), WandbSink(project="p")])
    mon = gradvar.Monitor(model, opt, "runs/x", sinks=["tensorboard", "wandb"])   # the same, by name

Tags: gradvar/<steps column>, gradvar/layers/<group>/<stat>, gradvar/probe/<seqlen>/<column>,
gradvar/events/<kind> (text; W&B alerts), all against the optimizer step.
"""

from __future__ import annotations

from pathlib import Path

from .base import Sink, SinkSet
from .tensorboard import TensorBoardSink
from .wandb import WandbSink

__all__ = ["Sink", "SinkSet", "TensorBoardSink", "WandbSink", "build"]


def build(spec, run_dir) -> list[Sink]:
    """Sinks from a list of Sink objects and names: "tensorboard" (run_dir/tensorboard), "wandb" (the active
    W&B run, or a new one)."""
    out = []
    for s in spec or ():
        if isinstance(s, Sink):
            out.append(s)
        elif s == "tensorboard":
            out.append(TensorBoardSink(Path(run_dir) / "tensorboard"))
        elif s == "wandb":
            out.append(WandbSink())
        else:
            raise ValueError(f"unknown sink {s!r}: a Sink, 'tensorboard' or 'wandb'")
    return out
