"""Monitor: instruments any PyTorch loop and writes tidy records under run_dir/records.

    mon = gradvar.Monitor(model, optimizer, "runs/x", quantities="paper")
    for batch in data:
        loss = model(batch).loss; loss.backward(); optimizer.step(); optimizer.zero_grad()
        mon.step(loss=loss)
    mon.close()

Hooks find the micro-batch boundaries (one tensor hook call per parameter per backward) and read the gradient
when the step's last backward pass ends, before any clipping (torch's or Lightning's, inside a closure passed
to `optimizer.step` too); the optimizer state after the step. Statistics stay on the device and are combined
and written every `flush_every` steps. What the monitor needs and infers: docs/monitor.md.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from . import notes, sharded
from . import quantities as Q
from .exit_guard import ExitGuard
from .loop_hooks import LoopHooks, no_step_due, torch_optimizer
from .output import Output
from .rows import RowBuilder
from .run_state import RunState
from .spikes import SpikeRule

PROBE_OPTIONS = ("probe_batch", "probe_every", "probe_loss_every", "probe_micro_batch", "probe_seqlens", "loss_fn")


class Monitor:
    """Records gradient variance, Adam variance state and loss spikes, per step and sequence length.

    notify: called on rank 0 as notify(reason, message) with each once-per-run note (why a column stays empty,
    or what the monitor did about the loop's wiring): a UserWarning by default; the `note` event is written
    either way. grad_scaler: a torch.amp.GradScaler whose scaled losses the loop backpropagates (fp16): the
    micro-batch gradients are then S times the true ones, and the statistics divide S back out; found by
    itself when the loop steps through `scaler.step(optimizer)` or a wrapper that holds one (accelerate's).
    writer: the records writer (rank 0; None elsewhere). sinks: the dashboards (gradvar.sinks) that get each
    flush's rows on rank 0, after the records are written.

    What it holds: the loop's hooks and the step under way (gradvar.loop_hooks, gradvar.step), the run's host
    state (gradvar.run_state), the row builder and the write path (gradvar.rows, gradvar.output), and the
    steps buffered until the next flush.
    """

    loop_class = LoopHooks
    """What hears the loop (DeepSpeedMonitor's reads ZeRO's partitions)."""

    def __init__(
        self,
        model,
        optimizer,
        run_dir,
        quantities="paper",
        *,
        flush_every: int = 50,
        probe_batch: torch.Tensor | None = None,
        probe_every: int | None = None,
        probe_loss_every: int | None = None,
        probe_micro_batch: int | None = None,
        probe_seqlens=None,
        loss_fn=None,
        layers_every: int = 1,
        spike_rule: SpikeRule = SpikeRule(),
        resume_step: int | None = None,
        handle_sigterm: bool = True,
        infer_inputs: bool = True,
        grad_scaler=None,
        notify=None,
        sinks=(),
    ):
        self.model, self.optimizer = model, torch_optimizer(optimizer)
        self._stepper = optimizer  # what the loop steps: a wrapper may take no step on a call (see no_step_due)
        if grad_scaler is None and isinstance(getattr(optimizer, "scaler", None), torch.amp.GradScaler):
            grad_scaler = optimizer.scaler  # accelerate's wrapper under fp16
        self.notify = notify or _warn
        self.module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.run_dir = Path(run_dir)
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        probe = (probe_batch, probe_every, probe_loss_every, probe_micro_batch, probe_seqlens, loss_fn)
        self.quantities = Q.resolve(quantities, dict(zip(PROBE_OPTIONS, probe)))
        self._whole_only: list[str] = []  # FSDP2: the quantities that need whole parameters, not run (a note)
        if sharded.is_sharded(self.module):
            self.quantities, self._whole_only = Q.shard_local(self.quantities)
        self._has = {cls: any(isinstance(q, cls) for q in self.quantities) for cls in (Q.GradVariance, Q.Loss)}
        self._loop = self.loop_class(
            self.module,
            self.optimizer,
            self.quantities,
            self.world_size,
            self.rank,
            infer_inputs=infer_inputs,
            grad_scaler=grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None,
            note_once=self._note_once,
            log_event=self.log_event,
        )
        loop = self._loop
        self.capture, self.params, self.groups, self.subsets = loop.capture, loop.params, loop.groups, loop.subsets
        self.group_index, self.sharded = loop.group_index, loop.sharded
        self.flush_every, self.layers_every = flush_every, layers_every
        self.run_state = RunState(spike_rule)
        self.rows = RowBuilder(self.groups, self.world_size, self.run_state)
        self._out = Output(
            self.run_dir, self.rows, self.run_state, self.world_size, self.rank, resume_step, sinks, self._sink_note
        )
        self.writer, self.sinks = self._out.writer, self._out.sinks
        self.step_num = 0 if resume_step is None else int(resume_step)
        self._buffer: list[tuple[dict, dict]] = []  # (host meta, {name: Stat}) per step
        self._side_rows: list = []  # (table, row) of the buffered steps
        self._last_time = time.perf_counter()
        self._closed = False
        self._told: set[str] = set()
        self._loop.begin_step(self.step_num + 1)
        self._guard = ExitGuard(self, handle_sigterm)

    # ----------------------------------------------------------------- public API
    def paused(self):
        """Forward/backward passes inside this block are not recorded (your own probes, evaluation)."""
        return self._loop.paused()

    def clip_grad_norm_(self, max_norm: float, foreach: bool | None = None) -> torch.Tensor:
        """Clip like torch.nn.utils.clip_grad_norm_, reusing the norm the monitor read at the end of the last
        backward pass (one pass over the gradients fewer, and the gradient statistics read before the
        multiply). torch's own function works as well: the monitor records the gradient before it either
        way. max_norm=inf only measures."""
        return self._loop.clip_grad_norm_(max_norm, foreach)

    @property
    def grad_scaler(self):
        """The GradScaler whose scale the statistics divide out: given, or found in the optimizer step."""
        return self._loop.grad_scaler

    def step(
        self,
        loss=None,
        *,
        seqlen: int | None = None,
        tokens: int | None = None,
        lr: float | None = None,
        grad_norm=None,
        batch_size: int | None = None,
        extra: dict | None = None,
    ) -> None:
        """Close the current optimizer step.

        loss: the step's loss, or a list of the micro-batch losses (unscaled); defaults to the losses the
        model's forwards returned (`.loss`, a dict's "loss", a (logits, loss) tuple). seqlen: sequence length
        trained at this step. tokens: training tokens consumed so far, all ranks (cumulative). batch_size:
        sequences per optimizer step, all ranks, when the forwards do not show it. grad_norm: the norm
        before clipping, if you computed it yourself (the statistics are then rescaled to it). extra: more
        per-step device scalars, written as steps columns of the same names. Defaults are inferred.

        After an `optimizer.step()` that took no step by design (accelerate's wrapper inside
        `accelerator.accumulate` before the last micro-batch) no row is written: the micro-batches, losses and
        options given so far count in the row of the step that follows.
        """
        if self._closed:
            raise RuntimeError("Monitor.step() after close()")
        given = {"seqlen": seqlen, "tokens": tokens, "lr": lr, "grad_norm": grad_norm, "batch_size": batch_size}
        given["extra"] = extra
        step = self._loop.step
        if not step.took_step and no_step_due(self._stepper):
            step.hold(loss, given)
            return
        loss, given = step.with_held(loss, given)
        self._write_step(loss, **given)

    def _write_step(self, loss, *, seqlen, tokens, lr, grad_norm, batch_size, extra) -> None:
        loop = self._loop
        loop.close_grads(loss, grad_norm)
        step, ctx = loop.step, loop.ctx()
        for q in loop.scheduled():
            step.add_stats(q.on_step(ctx))
        for name, value in (extra or {}).items():
            step.add_stats({f"extra:{name}": Q.Stat(torch.as_tensor(value).detach().float().reshape(()), "same")})
        self.step_num += 1
        self._notes(step)
        self._buffer.append((self._meta(step, seqlen, tokens, lr, batch_size), step.stats))
        self._side_rows += step.side_rows
        loop.begin_step(self.step_num + 1)
        if self.step_num % self.flush_every == 0 or self.stop_requested:
            self.flush()

    def _notes(self, step) -> None:
        """Say why a column of the step just closed stays empty (once per monitor and reason)."""
        k, n = step.facts.k_local, self.step_num
        if k and not step.took_step:
            self._note_once(*notes.no_optimizer_step(n))
        elif k * self.world_size == 1 and self._has[Q.GradVariance]:
            self._note_once(*notes.single_micro_batch(n))
        for reason, msg in sharded.notes(self.quantities, self._whole_only, n) if self.sharded else ():
            self._note_once(reason, msg)
        if k and step.facts.losses is None and self._has[Q.Loss]:
            self._note_once(*notes.no_loss(n))

    def _note_once(self, reason: str, msg: str) -> None:
        if reason not in self._told:
            self._told.add(reason)
            if self.rank == 0:
                self.notify(reason, msg)
            self.log_event("note", msg, value=1.0)

    def _sink_note(self, msg: str) -> None:
        self.log_event("note", msg)

    def _meta(self, step, seqlen, tokens, lr, batch_size) -> dict:
        now = time.perf_counter()
        if lr is None:  # no update this step (a GradScaler skipped it): the current LR
            lr = step.facts.lr_applied
            lr = self.optimizer.param_groups[0].get("lr", math.nan) if lr is None else lr
        k = step.facts.k_local
        meta, why = step.inputs.meta(
            self.step_num, k, self.world_size, self.run_state.tokens, seqlen=seqlen, tokens=tokens,
            batch_size=batch_size, lr=lr, time_s=now - self._last_time,
        )  # fmt: skip
        if why and self._has[Q.GradVariance]:
            self._note_once(*notes.batch_size_unknown(self.step_num, why))
        self.run_state.advance(meta["tokens"])
        self._last_time = now
        return meta

    def log_event(self, kind: str, message: str, value: float = math.nan, step: int | None = None) -> None:
        """Record an event (checkpoint, resume, preemption, ...) in the events table (rank 0 only)."""
        self.run_state.add_event(step or self.step_num, kind, message, value)

    def log_row(self, table: str, row: dict) -> None:
        """Append a row to another table (e.g. `evals`); it carries step, tokens and seqlen."""
        self.run_state.add_row(table, self.step_num, row)

    def flush(self) -> None:
        """Combine buffered statistics across ranks (collective under DDP) and write them (rank 0)."""
        buffer, self._buffer = self._buffer, []
        side, self._side_rows = self._side_rows, []
        self._out.flush(buffer, side, self.quantities, self.layers_every, self._note_once)

    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM arrived (the trainer checkpoints and exits at the next step boundary)."""
        return self._guard.stop_requested

    @property
    def tokens(self) -> int:
        """Training tokens consumed so far, all ranks (the latest step's `tokens` column)."""
        return self.run_state.tokens

    def set_tokens(self, tokens: int) -> None:
        """Continue the tokens column from `tokens` (a resume whose count comes from the records)."""
        self.run_state.advance(tokens)

    def state_dict(self) -> dict:
        # "rows": the key of the run state in checkpoints written before it had its own object
        return {"step": self.step_num, "rows": self.run_state.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step"])
        self._loop.renumber(self.step_num + 1)
        self.run_state.load_state_dict(state["rows"])

    def truncate_after(self, step: int) -> None:
        """Drop the recorded rows after `step` (a rewind to a checkpoint redoes them); flush first. Rank 0 only
        writes, so the other ranks have nothing to drop."""
        if self.writer is not None:
            self.writer.truncate_after(step)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self.sinks.close()
        self._closed = True
        self._loop.remove()
        self._guard.restore()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _warn(reason: str, msg: str) -> None:
    warnings.warn(f"gradvar: {msg}", stacklevel=6)  # the user's Monitor.step call (through _write_step)
