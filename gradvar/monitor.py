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

import contextlib
import math
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from . import notes, sharded
from . import quantities as Q
from .exit_guard import ExitGuard
from .inputs import StepInputs
from .loop_hooks import LoopHooks, no_step_due, torch_optimizer
from .output import Output
from .rows import RowBuilder
from .run_state import RunState
from .spikes import SpikeRule

PROBE_OPTIONS = ("probe_batch", "probe_every", "probe_loss_every", "probe_micro_batch", "probe_seqlens", "loss_fn")


class Monitor(LoopHooks):
    """Records gradient variance, Adam variance state and loss spikes, per step and sequence length.

    notify: called on rank 0 as notify(reason, message) with each once-per-run note (why a column stays empty,
    or what the monitor did about the loop's wiring): a UserWarning by default; the `note` event is written
    either way. grad_scaler: a torch.amp.GradScaler whose scaled losses the loop backpropagates (fp16): the
    micro-batch gradients are then S times the true ones, and the statistics divide S back out; found by
    itself when the loop steps through `scaler.step(optimizer)` or a wrapper that holds one (accelerate's).
    writer: the records writer (rank 0; None elsewhere). sinks: the dashboards (gradvar.sinks) that get each
    flush's rows on rank 0, after the records are written.
    """

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
        self._hook_loop(infer_inputs)
        self.flush_every, self.layers_every = flush_every, layers_every
        self.grad_scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        self.run_state = RunState(spike_rule)
        self.rows = RowBuilder(self.groups, self.world_size, self.run_state)
        self._out = Output(
            self.run_dir, self.rows, self.run_state, self.world_size, self.rank, resume_step, sinks, self._sink_note
        )
        self.writer, self.sinks = self._out.writer, self._out.sinks
        self.step_num = 0 if resume_step is None else int(resume_step)
        self._buffer: list[tuple[dict, dict]] = []  # (host meta, {name: Stat}) per step
        self._side_rows: list = []
        self._last_time = time.perf_counter()
        self._closed = False
        self._told: set[str] = set()
        self._reset_step()
        self._guard = ExitGuard(self, handle_sigterm)

    # ----------------------------------------------------------------- public API
    @contextlib.contextmanager
    def paused(self):
        """Forward/backward passes inside this block are not recorded (your own probes, evaluation)."""
        was, self.capture.active = self.capture.active, False
        try:
            yield
        finally:
            self.capture.active = was

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
        if not self._took_step and no_step_due(self._stepper):
            self._held.append((_detached(loss), given))  # the graph of a held loss is not kept
            return
        loss, given = self._with_held(loss, given)
        self._write_step(loss, **given)

    def _with_held(self, loss, given: dict) -> tuple:
        """The step's loss and options with those of the calls that took no step: the losses of every call (the
        forwards' when a call gave none), the latest value of each option."""
        calls = [*self._held, (loss, given)]
        if len(calls) == 1:
            return loss, given
        losses = [x for call_loss, _ in calls for x in _as_list(call_loss)]
        merged = {k: next((kw[k] for _, kw in reversed(calls) if kw[k] is not None), None) for k in given}
        return (None if any(x is None for x in losses) else losses), merged

    def _write_step(self, loss, *, seqlen, tokens, lr, grad_norm, batch_size, extra) -> None:
        self._close_grads(loss, grad_norm)
        ctx = self._ctx()
        for q in self._scheduled():
            self._pending.update(q.on_step(ctx))
        for name, value in (extra or {}).items():
            self._pending[f"extra:{name}"] = Q.Stat(torch.as_tensor(value).detach().float().reshape(()), "same")
        self.step_num += 1
        self._notes()
        self._buffer.append((self._meta(seqlen, tokens, lr, batch_size), self._pending))
        self._reset_step()
        if self.step_num % self.flush_every == 0 or self.stop_requested:
            self.flush()

    def _close_grads(self, loss, grad_norm) -> None:
        """The step's gradient statistics and what the quantities' on_step needs besides them."""
        if not self._grads_read and self.capture.micro_batches and all(p.grad is None for p in self.params):
            # no optimizer step and `.grad` set to None since (zero_grad after a GradScaler's skip): only NaN
            self._grads_read = True
            self._facts.read(self.capture.micro_batches)
            self._note_once(*notes.grads_cleared(self.step_num + 1))
        if not self._grads_read and (self.capture.micro_batches or any(p.grad is not None for p in self.params)):
            self._read_grads()  # no optimizer step (a GradScaler skipped it, or none was taken)
        if self._stale_read:
            self._grad_stats = {}
            self._note_once(*notes.backward_after_read(self.step_num + 1))
        self._pending.update(self._grad_stats)
        self._facts.closed(
            self._losses(loss),
            loss is not None,
            torch.stack(self._inputs.losses) if self._inputs.losses else None,
            None if grad_norm is None else torch.as_tensor(sharded.replicated(grad_norm)).detach().float(),
        )

    def _notes(self) -> None:
        """Say why a column of the step just closed stays empty (once per monitor and reason)."""
        k, n = self._facts.k_local, self.step_num
        if k and not self._took_step:
            self._note_once(*notes.no_optimizer_step(n))
        elif k * self.world_size == 1 and self._has[Q.GradVariance]:
            self._note_once(*notes.single_micro_batch(n))
        for reason, msg in sharded.notes(self.quantities, self._whole_only, n) if self.sharded else ():
            self._note_once(reason, msg)
        if k and self._facts.losses is None and self._has[Q.Loss]:
            self._note_once(*notes.no_loss(n))

    def _note_once(self, reason: str, msg: str) -> None:
        if reason not in self._told:
            self._told.add(reason)
            if self.rank == 0:
                self.notify(reason, msg)
            self.log_event("note", msg, value=1.0)

    def _sink_note(self, msg: str) -> None:
        self.log_event("note", msg)

    def _losses(self, loss):
        if loss is None:
            got = self._inputs.losses
            return torch.stack(got) if got else None
        if isinstance(loss, (list, tuple)):
            return torch.stack([torch.as_tensor(x).detach().float().reshape(()) for x in loss])
        return torch.as_tensor(loss).detach().float().reshape(1)

    def _meta(self, seqlen, tokens, lr, batch_size) -> dict:
        now = time.perf_counter()
        if lr is None:  # no update this step (a GradScaler skipped it): the current LR
            lr = self._facts.lr_applied
            lr = self.optimizer.param_groups[0].get("lr", math.nan) if lr is None else lr
        k = self._facts.k_local
        meta, why = self._inputs.meta(
            self.step_num, k, self.world_size, self.run_state.tokens, seqlen=seqlen, tokens=tokens,
            batch_size=batch_size, lr=lr, time_s=now - self._last_time,
        )  # fmt: skip
        if why and self._has[Q.GradVariance]:
            self._note_once(*notes.batch_size_unknown(self.step_num, why))
        self.run_state.advance(meta["tokens"])
        self._last_time = now
        return meta

    def _reset_step(self):
        self.capture.reset()
        self._pending, self._grad_stats = {}, {}
        self._facts = Q.StepFacts()
        self._grads_read = self._stale_read = False
        self._clip_coef = None
        self._inputs = StepInputs()
        self._took_step = False  # set by the optimizer's step pre-hook
        self._held: list[tuple] = []  # (loss, options) of the Monitor.step calls that took no step

    def log_event(self, kind: str, message: str, value: float = math.nan, step: int | None = None) -> None:
        """Record an event (checkpoint, resume, preemption, ...) in the events table (rank 0 only)."""
        self.run_state.add_event(step or self.step_num, kind, message, value)

    def log_row(self, table: str, row: dict) -> None:
        """Append a row to another table (e.g. `evals`); it carries step, tokens and seqlen."""
        self.run_state.add_row(table, self.step_num, row)

    def flush(self) -> None:
        """Combine buffered statistics across ranks (collective under DDP) and write them (rank 0)."""
        buffer, self._buffer = self._buffer, []
        side, self._side_rows[:] = list(self._side_rows), []
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
        for h in self._handles:
            h.remove()
        for q in self.quantities:
            if hasattr(q, "detach"):
                q.detach()
        self.capture.remove()
        self._guard.restore()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_list(loss) -> list:
    return list(loss) if isinstance(loss, (list, tuple)) else [loss]


def _detached(loss):
    if isinstance(loss, (list, tuple)):
        return [_detached(x) for x in loss]
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def _warn(reason: str, msg: str) -> None:
    warnings.warn(f"gradvar: {msg}", stacklevel=6)  # the user's Monitor.step call (through _write_step)
