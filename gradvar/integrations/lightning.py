"""Lightning integration: one line instruments a `lightning.Trainer` run.

    trainer = lightning.Trainer(..., callbacks=[GradvarCallback("runs/my_run")])

Automatic optimization (gradient accumulation, Lightning's own `gradient_clip_val`, its closure-based
optimizer step), manual optimization and the DDP strategy. The monitor reads the gradient at the end of
each step's last backward pass, before Lightning clips it; batch size, sequence length and tokens come from
the batches (the first tensor of each, see gradvar.inputs), the loss from what `training_step` returns
(automatic optimization divides it by `accumulate_grad_batches`; the callback multiplies that back). Under
fp16 the precision plugin's GradScaler is handed to the monitor. The monitor's state rides in Lightning's
checkpoints, so a resumed fit continues its step count, tokens and spike detector. gradvar's scalars go to the
Trainer's TensorBoard and W&B loggers (sinks=[...] chooses others, sinks=[] none).
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from ..inputs import describe
from ..monitor import Monitor


def logger_sinks(trainer) -> list:
    """gradvar's scalars through the Trainer's own loggers: a TensorBoardLogger's SummaryWriter, a WandbLogger's
    run (rank 0 only; the loggers' experiments are only touched there)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from ..sinks import TensorBoardSink, WandbSink

    if trainer.global_rank != 0:
        return []
    out = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            out.append(TensorBoardSink(writer=logger.experiment))
        elif isinstance(logger, WandbLogger):
            out.append(WandbSink(run=logger.experiment))
    return out


class GradvarCallback(Callback):
    def __init__(self, run_dir, quantities="paper", **monitor_kwargs):
        self.run_dir, self.quantities, self.kwargs = run_dir, quantities, monitor_kwargs
        self.monitor: Monitor | None = None
        self._restored: dict | None = None
        self._losses: list[torch.Tensor] = []
        self._last_step = 0

    def on_train_start(self, trainer, pl_module):
        if len(trainer.optimizers) != 1:
            raise ValueError(f"GradvarCallback monitors one optimizer; this module has {len(trainer.optimizers)}")
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        resume = trainer.global_step or None
        kwargs = {"sinks": logger_sinks(trainer), **self.kwargs}  # sinks= given: those instead
        self.monitor = Monitor(
            trainer.strategy.model,
            trainer.optimizers[0],
            self.run_dir,
            self.quantities,
            infer_inputs=False,
            grad_scaler=scaler,
            resume_step=resume,
            handle_sigterm=False,
            **kwargs,
        )
        if self._restored is not None:
            self.monitor.load_state_dict(self._restored)
            self.monitor.log_event("resume", f"resumed from step {trainer.global_step}")
        self._last_step, self._losses = trainer.global_step, []
        self._sequences = self._tokens = self._passes = 0
        self._seqlen = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        mb = describe((batch,))
        self._passes += 1
        if mb is not None:
            self._sequences += mb.sequences
            if mb.tokens is not None:
                self._tokens, self._seqlen = self._tokens + mb.tokens, mb.seqlen

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            if pl_module.automatic_optimization:  # Lightning divided it by the accumulation count
                loss = loss.detach() * trainer.accumulate_grad_batches
            self._losses.append(loss.detach().float().reshape(()))
        if self.monitor is None or trainer.global_step == self._last_step:
            return  # the step is still accumulating
        self._last_step = trainer.global_step
        world = trainer.world_size
        tokens = self.monitor.tokens + self._tokens * world if self._seqlen is not None else None
        self.monitor.step(
            loss=self._losses or None, seqlen=self._seqlen, tokens=tokens, batch_size=self._sequences * world or None
        )
        self._losses, self._sequences, self._tokens, self._passes = [], 0, 0, 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.monitor is not None:
            self.monitor.flush()  # records first: a checkpoint never points past what is on disk
            checkpoint["gradvar_monitor"] = self.monitor.state_dict()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._restored = checkpoint.get("gradvar_monitor")

    def on_train_end(self, trainer, pl_module):
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        self._close()

    def _close(self):
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
