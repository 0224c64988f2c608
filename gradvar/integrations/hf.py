"""Hugging Face Trainer integration: one line instruments a `transformers.Trainer` run.

    trainer.add_callback(GradvarCallback("runs/my_run", quantities="paper"))

gradvar's scalars go where the Trainer's `report_to` sends its own logs (TensorBoard, W&B); pass sinks=[...]
to choose others, sinks=[] for none.

The Trainer keeps its own gradient clipping: the monitor reads the gradient at the end of each step's last
backward pass, before the Trainer clips it. Losses, sequence length and tokens come from the model's forward
calls; with fp16 the monitor divides accelerate's loss scale out of the micro-batch gradients. The callback
changes none of the Trainer's arguments.

Resuming (`trainer.train(resume_from_checkpoint=...)`): the records continue after the checkpoint's step,
with its cumulative token count. Each checkpoint the Trainer saves gets the monitor's state
(`gradvar_monitor.pt`: step, tokens, spike-detector state) and the records are flushed first, so a checkpoint
never points past what is on disk; rows written after it by the interrupted run are dropped on resume.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..monitor import Monitor
from ..records import read_records

STATE_FILE = "gradvar_monitor.pt"


def report_to_sinks(args) -> list:
    """gradvar's scalars where the Trainer reports (`report_to`): W&B into the run the WandbCallback started;
    TensorBoard into $TENSORBOARD_LOGGING_DIR (the Trainer's own run) when set, else output_dir/runs/gradvar,
    beside the Trainer's runs/<date>_<host>."""
    from ..sinks import TensorBoardSink, WandbSink

    report_to = args.report_to if isinstance(args.report_to, (list, tuple)) else [args.report_to]
    out = []
    if "tensorboard" in report_to or "all" in report_to:
        out.append(TensorBoardSink(os.getenv("TENSORBOARD_LOGGING_DIR") or Path(args.output_dir) / "runs" / "gradvar"))
    if "wandb" in report_to or "all" in report_to:
        out.append(WandbSink())  # opened at the first flush: wandb.run, started by the WandbCallback by then
    return out


class GradvarCallback(TrainerCallback):
    def __init__(self, run_dir, quantities="paper", **monitor_kwargs):
        self.run_dir, self.quantities, self.kwargs = run_dir, quantities, monitor_kwargs
        self.monitor: Monitor | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if model is None or inner is None:
            raise RuntimeError("GradvarCallback needs the model and optimizer (transformers >= 4.40)")
        scaler = getattr(optimizer, "scaler", None)  # accelerate's GradScaler under fp16
        if self.monitor is not None:  # a second train() call with the same callback
            self.monitor.close()
        resume = state.global_step or None
        kwargs = {"sinks": report_to_sinks(args), **self.kwargs}  # sinks= given: those instead
        self.monitor = Monitor(
            model, inner, self.run_dir, self.quantities, grad_scaler=scaler, resume_step=resume, **kwargs
        )
        if resume:
            self._restore(Path(args.output_dir) / f"checkpoint-{resume}" / STATE_FILE, resume)

    def _restore(self, path: Path, step: int) -> None:
        mon = self.monitor
        if path.is_file():
            mon.load_state_dict(torch.load(path, weights_only=True))
            mon.log_event("resume", f"resumed from step {step} ({path.parent.name})")
            return
        # no saved state (a checkpoint from before the callback was added): continue the tokens on disk
        try:
            steps = read_records(self.run_dir, ["steps"])["steps"]
        except FileNotFoundError:
            steps = None
        row = None if steps is None else steps[steps.step == step]
        if row is not None and len(row):
            mon.set_tokens(int(row.tokens.iloc[-1]))
            mon.log_event("resume", f"resumed from step {step}: tokens continue from the records")
        else:
            mon.log_event(
                "note",
                f"resumed from step {step} with no gradvar state or records of it: the tokens "
                "column counts from this run's start",
                value=math.nan,
            )

    def on_save(self, args, state, control, **kwargs):
        if self.monitor is None:
            return
        self.monitor.flush()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and self.monitor.rank == 0:
            torch.save(self.monitor.state_dict(), folder / STATE_FILE)

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
