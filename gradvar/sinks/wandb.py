"""Weights & Biases sink: gradvar's scalars in a W&B run's history, events as W&B alerts.

    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[WandbSink(project="my-project")])  # starts a run
    mon = gradvar.Monitor(model, opt, "runs/x", sinks=[WandbSink(run=wandb.run)])          # your run

The x-axis is the metric `gradvar/step` (the optimizer step), declared with define_metric, so gradvar's rows
never move the run's own step counter and sit beside what the loop or the HF/Lightning logger already logs.
WANDB_MODE=offline works as usual (nothing needs the network; `wandb sync` uploads later).
"""

from __future__ import annotations

from itertools import groupby

from .base import Sink

STEP_METRIC = "gradvar/step"
_QUIET_KINDS = ("checkpoint",)  # routine: no alert


class WandbSink(Sink):
    def __init__(self, run=None, *, project: str | None = None, alerts: bool = True, **init_kwargs):
        """run: your wandb run; without it the active run (wandb.run) at the first flush, else one started
        with wandb.init(project=project, **init_kwargs) (and finished on close). alerts: events as run.alert."""
        self.run, self.project, self.alerts, self.init_kwargs = run, project, alerts, init_kwargs
        self._owns = False
        self._declared = False

    def _open(self):
        if self.run is None:
            import wandb

            self.run = wandb.run
            if self.run is None:
                self.run, self._owns = wandb.init(project=self.project, **self.init_kwargs), True
        if not self._declared:
            self.run.define_metric(STEP_METRIC)
            self.run.define_metric("gradvar/*", step_metric=STEP_METRIC)
            self._declared = True
        return self.run

    def scalars(self, values) -> None:
        run = self._open()
        for step, items in groupby(values, key=lambda v: v[0]):
            run.log({STEP_METRIC: step, **{tag: value for _, tag, value in items}})

    def events(self, events) -> None:
        if not self.alerts:
            return
        import wandb

        run = self._open()
        for step, kind, message in events:
            if kind in _QUIET_KINDS:
                continue
            level = (
                wandb.AlertLevel.ERROR
                if kind.startswith("nonfinite")
                else wandb.AlertLevel.WARN
                if kind in ("spike", "rewind")
                else wandb.AlertLevel.INFO
            )
            run.alert(title=f"gradvar {kind} at step {step}", text=message, level=level, wait_duration=0)

    def close(self) -> None:
        if self.run is not None and self._owns:
            self.run.finish()
        self.run = None if self._owns else self.run
