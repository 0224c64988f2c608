"""Hugging Face Trainer integration: one line instruments a `transformers.Trainer` run.

    trainer.add_callback(GradvarCallback("runs/my_run", quantities="paper"))

The callback takes over gradient clipping (same max_grad_norm, applied in on_pre_optimizer_step through
Monitor.clip_grad_norm_) so that the gradient statistics see the gradient before clipping; losses,
sequence length and tokens are read from the model's forward calls. With fp16 the gradients are unscaled
before they are clipped (as the Trainer's own clipping does) and the monitor divides the loss scale out of
the micro-batch gradients.
"""
from __future__ import annotations

from transformers import TrainerCallback

from ..monitor import Monitor


class GradvarCallback(TrainerCallback):
    def __init__(self, run_dir, quantities="paper", **monitor_kwargs):
        self.run_dir, self.quantities, self.kwargs = run_dir, quantities, monitor_kwargs
        self.monitor: Monitor | None = None
        self.max_norm = 0.0

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if model is None or inner is None:
            raise RuntimeError("GradvarCallback needs the model and optimizer (transformers >= 4.40)")
        scaler = getattr(optimizer, "scaler", None)  # accelerate's GradScaler under fp16
        self.monitor = Monitor(model, inner, self.run_dir, self.quantities, grad_scaler=scaler, **self.kwargs)
        if args.max_grad_norm and args.max_grad_norm > 0:
            self.max_norm, args.max_grad_norm = float(args.max_grad_norm), 0.0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.monitor is not None and self.max_norm > 0:
            if self.monitor.grad_scaler is not None:  # clip true gradients, not scaled ones
                self.monitor.grad_scaler.unscale_(self.monitor.optimizer)
            self.monitor.clip_grad_norm_(self.max_norm)

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
            if self.max_norm > 0:
                args.max_grad_norm = self.max_norm
