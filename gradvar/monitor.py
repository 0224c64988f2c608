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

import atexit
import contextlib
import math
import signal
import sys
import threading
import time
import warnings
import weakref
from pathlib import Path

import torch
import torch.distributed as dist

from . import _torch_compat as tc
from . import quantities as Q
from . import sharded
from .capture import GradCapture
from .combine import combine
from .groups import Subsets, build_groups, trainable_params
from .hooks import WeakHook
from .inputs import StepInputs, describe, loss_share, output_loss
from .pre_clip import pre_clip
from .records import RecordWriter
from .rows import RowBuilder
from .sinks import SinkSet
from .sinks import build as build_sinks
from .spikes import SpikeRule

PROBE_OPTIONS = ("probe_batch", "probe_every", "probe_loss_every", "probe_micro_batch", "probe_seqlens", "loss_fn")


class Monitor:
    """Records gradient variance, Adam variance state and loss spikes, per step and sequence length."""

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
        self.model, self.optimizer = model, optimizer
        self.notify = notify or _warn
        """Called on rank 0 as notify(reason, message) with each once-per-run note (why a column stays empty,
        or what the monitor did about the loop's wiring): a UserWarning by default. The `note` event is
        written either way."""
        self.module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.run_dir = Path(run_dir)
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        probe = dict(
            zip(PROBE_OPTIONS, (probe_batch, probe_every, probe_loss_every, probe_micro_batch, probe_seqlens, loss_fn))
        )
        self.quantities = Q.resolve(quantities, probe)
        self._has = {cls: any(isinstance(q, cls) for q in self.quantities) for cls in (Q.GradVariance, Q.Loss)}
        names, self.params = trainable_params(self.module)
        self.groups, gidx = build_groups(names)
        self.subsets = Subsets(self.params, gidx, len(self.groups))
        self.group_index = self.subsets.all.groups
        elementwise = any(q.needs_elementwise for q in self.quantities)
        self.sharded = sharded.is_sharded(self.module)
        """FSDP2: the capture hooks the unsharded parameters (the per-rank gradient before the reduce-scatter);
        the element-wise variance would need every rank's micro-batch gradients per element: not kept."""
        with (
            sharded.unsharded_params(self.module, self.params)
            if self.sharded
            else contextlib.nullcontext(self.params) as hooked
        ):
            self.capture = GradCapture(
                hooked,
                self.subsets,
                elementwise=elementwise and not self.sharded,
                lazy=self.world_size == 1,
                grad_params=self.params,
            )
        self.capture.on_pass_end = WeakHook(self, "_after_pass")
        self.flush_every, self.layers_every = flush_every, layers_every
        self.grad_scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        """A torch.amp.GradScaler whose scaled losses the loop backpropagates (fp16): the micro-batch gradients
        are then S times the true ones, and the statistics divide S back out. Found by itself when the loop
        steps through `scaler.step(optimizer)`."""
        self.writer = RecordWriter(self.run_dir, resume_step=resume_step) if self.rank == 0 else None
        self.sinks = SinkSet(build_sinks(sinks, run_dir) if self.rank == 0 else (), lambda m: self.log_event("note", m))
        """Dashboards (gradvar.sinks) that get each flush's rows on rank 0, after the records are written."""
        self.rows = RowBuilder(self.groups, spike_rule, self.world_size)
        self.step_num = 0 if resume_step is None else int(resume_step)
        self._buffer: list[tuple[dict, dict]] = []  # (host meta, {name: Stat}) per step
        self._side_rows: list = []
        self._snapshot = None
        self._last_time = time.perf_counter()
        self._closed = False
        self._stop_requested = False
        self._told: set[str] = set()
        self._loss_share = None
        self._reset_step()
        self._handles = self._install_hooks(infer_inputs)
        self._prev_sigterm = self._install_sigterm() if handle_sigterm else None
        if self.world_size == 1:  # an uncaught exception or a plain exit still writes what was measured
            atexit.register(_flush_at_exit, weakref.ref(self))

    # ----------------------------------------------------------------- hooks
    def _install_hooks(self, infer_inputs):
        # weak hooks: deepcopy, torch.save(model) and EMA copies of the model keep working (gradvar.hooks)
        handles = [
            self.optimizer.register_step_pre_hook(WeakHook(self, "_pre_step")),
            self.optimizer.register_step_post_hook(WeakHook(self, "_post_step")),
        ]
        if infer_inputs:
            handles.append(self.module.register_forward_pre_hook(WeakHook(self, "_on_forward_pre"), with_kwargs=True))
            handles.append(self.module.register_forward_hook(WeakHook(self, "_on_forward")))
        for q in self.quantities:
            if hasattr(q, "attach"):
                q.attach(self.module)
        return handles

    def _recording(self) -> bool:
        """A forward that can feed a backward pass of the step: any mode (eval mode too), gradients on."""
        return self.capture.active and torch.is_grad_enabled()

    def _on_forward_pre(self, mod, args, kwargs):
        self._loss_share = None
        if self._recording():
            self._inputs.add(describe(args, kwargs))  # shapes are host values: no sync
            self._loss_share = loss_share(kwargs)

    def _on_forward(self, mod, args, out):
        loss = output_loss(out) if self._recording() else None
        if loss is not None:
            loss = loss.detach().float().reshape(())
            if self._loss_share is not None:  # the micro-batch's share of the step loss: back to its mean
                total, count = self._loss_share
                loss = loss * total / count
            self._inputs.losses.append(loss)

    def _after_pass(self):
        if self._grads_read:  # the gradient statistics were taken before this pass reached .grad
            self._stale_read = True

    def _ctx(self) -> Q.StepContext:
        return Q.StepContext(
            self.step_num + 1,
            self.module,
            self.optimizer,
            tuple(self.params),
            self.group_index,
            len(self.groups),
            self.capture,
            self.subsets,
            self.world_size,
            self._extras,
            self.sharded,
        )

    def _read_grads(self):
        """Run the quantities that need the step's gradient before clipping (once per step)."""
        if self._grads_read:
            return
        self._grads_read = True
        cap = self.capture
        self._extras["k_local"] = cap.micro_batches
        self._extras["pre_clip"] = self._pre_clip()
        if self.grad_scaler is not None:
            self._extras["grad_scale"] = tc.scaler_scale(self.grad_scaler)
        ctx = self._ctx()
        for q in self._scheduled():
            if not (cap.broken and q.needs_micro_batches):
                self._grad_stats.update(q.on_grads(ctx))
        if cap.broken:
            self._note_once(
                "grads_changed_between_passes",
                f"step {self.step_num + 1}: {cap.broken} between two "
                "backward passes of one step (zero_grad inside the accumulation loop?), so .grad no longer "
                "sums the step's micro-batches: the gradient-variance columns are NaN for such steps",
            )

    def _pre_step(self, optimizer, args, kwargs):
        if self.grad_scaler is None:
            self._adopt_scaler()
        # the LR this update applies: loops (HF Trainer too) step their scheduler before Monitor.step
        self._extras["lr_applied"] = optimizer.param_groups[0].get("lr", math.nan)
        if any(q.needs_snapshot for q in self._scheduled()):
            params = [sharded.local(p.detach()) for p in self.params]
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(p) for p in params]
            tc.foreach_copy_(self._snapshot, params)
            self._extras["snapshot"] = self._snapshot

    def _post_step(self, optimizer, args, kwargs):
        # after the update, not before it: a closure passed to optimizer.step (Lightning's automatic
        # optimization among others) runs the step's last forward and backward inside the step
        self._read_grads()
        ctx = self._ctx()
        for q in self._scheduled():
            self._pending.update(q.on_after_step(ctx))
        self._extras.pop("snapshot", None)

    def _adopt_scaler(self) -> None:
        """A step called from GradScaler.step: that scaler scaled the step's losses."""
        frame, code = sys._getframe(2), torch.amp.GradScaler.step.__code__
        for _ in range(8):
            if frame is None:
                return
            if frame.f_code is code:
                scaler = frame.f_locals.get("self")
                if isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled():
                    self.grad_scaler = scaler
                    self.log_event(
                        "note",
                        "the optimizer steps through an enabled GradScaler that was not passed as "
                        "grad_scaler=: its loss scale is divided out of the gradient statistics",
                        value=1.0,
                    )
                return
            frame = frame.f_back

    def _scheduled(self):
        step = self.step_num + 1
        return [q for q in self.quantities if q.schedule(step)]

    # ----------------------------------------------------------------- public API
    def clip_grad_norm_(self, max_norm: float, foreach: bool | None = None) -> torch.Tensor:
        """Clip like torch.nn.utils.clip_grad_norm_, reusing the norm the monitor read at the end of the last
        backward pass (one pass over the gradients fewer, and the gradient statistics read before the
        multiply). torch's own function works as well: the monitor records the gradient before it either
        way. max_norm=inf only measures."""
        # the step's passes are over when the loop clips: read now, while .grad is the pre-clip gradient (a
        # backward after this still shows, see _after_pass)
        self._read_grads()
        changed = self.capture.modified_since_end()
        before = self._pre_clip()
        sq = (before.grad_sq if before.applied_sq is None else before.applied_sq).sum()
        norm = (sharded.global_sq_sum(sq) if self.sharded else sq).sqrt()  # FSDP2: over all shards
        if math.isinf(max_norm):
            return norm
        # torch's rule: coefficient max_norm / (norm + 1e-6), clamped to 1, always applied (`foreach` is
        # accepted for torch's signature; the multiply is always one multi-tensor kernel)
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        grads = [sharded.local(p.grad) for p in self.params if p.grad is not None]
        if grads:
            tc.foreach_mul_(grads, coef)
        if not changed:  # the monitor knows this change exactly: no norm of the clipped gradient needed
            self._clip_coef = coef if self._clip_coef is None else self._clip_coef * coef
            self.capture.mark_unchanged()
            self._extras["clip_coef"] = self._clip_coef
        return norm

    def _pre_clip(self):
        s = self.grad_scaler
        # the scale of this step's backward passes (it changes in scaler.update(), after the step)
        scale = None if s is None else tc.scaler_scale(s)
        unscaled = s is not None and tc.scaler_unscaled(s, self.optimizer)
        return pre_clip(self.capture, self.params, scale, unscaled, self._clip_coef)

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
        """
        if self._closed:
            raise RuntimeError("Monitor.step() after close()")
        if not self._grads_read and (self.capture.micro_batches or any(p.grad is not None for p in self.params)):
            self._read_grads()  # no optimizer step (a GradScaler skipped it, or none was taken)
        if self._stale_read:
            self._grad_stats = {}
            self._note_once(
                "backward_after_read",
                f"step {self.step_num + 1}: a backward pass ran after "
                "optimizer.step() and before Monitor.step(): the gradient columns are NaN for such steps; "
                "call Monitor.step() right after the optimizer step",
            )
        self._pending.update(self._grad_stats)
        self._extras.update(
            losses=self._losses(loss),
            loss_given=loss is not None,
            forward_losses=torch.stack(self._inputs.losses) if self._inputs.losses else None,
        )
        if grad_norm is not None:
            self._extras["grad_norm_user"] = torch.as_tensor(sharded.replicated(grad_norm)).detach().float()
        self._extras.update(rank=self.rank, module=self.module, side_rows=self._side_rows)
        ctx = self._ctx()
        for q in self._scheduled():
            self._pending.update(q.on_step(ctx))
        for name, value in (extra or {}).items():
            self._pending[f"extra:{name}"] = Q.Stat(torch.as_tensor(value).detach().float().reshape(()), "same")
        self.step_num += 1
        self._notes()
        self._buffer.append((self._meta(seqlen, tokens, lr, batch_size), self._pending))
        self._reset_step()
        if self.step_num % self.flush_every == 0 or self._stop_requested:
            self.flush()

    def _notes(self) -> None:
        """Say why a column of the step just closed stays empty (once per monitor and reason)."""
        k, n = self._extras.get("k_local", 0), self.step_num
        if k * self.world_size == 1 and self._has[Q.GradVariance]:
            self._note_once(
                "single_micro_batch",
                f"step {n} had one micro-batch (one backward, one process): the "
                "gradient-variance columns (grad_trace_sigma, grad_true_sq, grad_noise_scale, grad_var_*) "
                "are NaN for such steps; they need K >= 2 micro-batches per step (gradient accumulation "
                "or DDP ranks)",
            )
        for reason, msg in sharded.notes(self.quantities, n) if self.sharded else ():
            self._note_once(reason, msg)
        if k and self._extras.get("losses") is None and self._has[Q.Loss]:
            self._note_once(
                "no_loss",
                f"step {n} had a backward but no loss reached the monitor (the model's forward "
                "returned no `.loss`, or infer_inputs=False): pass it, mon.step(loss=...); loss, "
                "loss_ratio and the spike columns are NaN without it",
            )

    def _note_once(self, reason: str, msg: str) -> None:
        if reason not in self._told:
            self._told.add(reason)
            if self.rank == 0:
                self.notify(reason, msg)
            self.log_event("note", msg, value=1.0)

    def _losses(self, loss):
        if loss is None:
            got = self._inputs.losses
            return torch.stack(got) if got else None
        if isinstance(loss, (list, tuple)):
            return torch.stack([torch.as_tensor(x).detach().float().reshape(()) for x in loss])
        return torch.as_tensor(loss).detach().float().reshape(1)

    def _meta(self, seqlen, tokens, lr, batch_size) -> dict:
        now = time.perf_counter()
        inp, k = self._inputs, self._extras.get("k_local", 0)
        if tokens is None:
            tokens = self.rows.tokens + inp.tokens * self.world_size
        seqlen = seqlen if seqlen is not None else inp.seqlen
        if batch_size is None and k:
            batch_size, why = inp.sequences_per_step(k, self.world_size, int(tokens) - self.rows.tokens, seqlen)
            if why and self._has[Q.GradVariance]:
                self._note_once(
                    "batch_size_unknown",
                    f"step {self.step_num}: the sequences per micro-batch are "
                    f"unknown ({why}): grad_trace_sigma and grad_noise_scale are NaN; pass "
                    "Monitor.step(batch_size=...) (sequences per optimizer step, all ranks)",
                )
        if lr is None:  # no update this step (a GradScaler skipped it): the current LR
            lr = self._extras.get("lr_applied", self.optimizer.param_groups[0].get("lr", math.nan))
        meta = {
            "step": self.step_num,
            "tokens": int(tokens),
            "seqlen": seqlen,
            "batch_size": batch_size,
            "lr": float(lr),
            "time_s": now - self._last_time,
            "k_local": k,
            "step_tokens": int(tokens) - self.rows.tokens,
        }
        self.rows.tokens = int(tokens)
        self._last_time = now
        return meta

    def _reset_step(self):
        self.capture.reset()
        self._pending, self._extras, self._grad_stats = {}, {}, {}
        self._grads_read = self._stale_read = False
        self._clip_coef = None
        self._inputs = StepInputs()

    def log_event(self, kind: str, message: str, value: float = math.nan, step: int | None = None) -> None:
        """Record an event (checkpoint, resume, preemption, ...) in the events table (rank 0 only)."""
        self.rows.events.append(self.rows.event(step or self.step_num, kind, message, value))

    def log_row(self, table: str, row: dict) -> None:
        """Append a row to another table (e.g. `evals`); it carries step, tokens and seqlen."""
        self.rows.extra.append(
            (table, {"step": self.step_num, "tokens": self.rows.tokens, "seqlen": self.rows.last_seqlen, **row})
        )

    def flush(self) -> None:
        """Combine buffered statistics across ranks (collective under DDP) and write them (rank 0)."""
        buffer, self._buffer = self._buffer, []
        side, self._side_rows[:] = list(self._side_rows), []
        sent: dict[str, list[dict]] = {}
        if buffer:
            slots = [(r, k) for _, r in side for k, v in r.items() if isinstance(v, torch.Tensor)]
            raw, values = combine(
                [stats for _, stats in buffer], self.world_size, self.rank, extra=[r[k] for r, k in slots]
            )
            for (r, k), v in zip(slots, values):
                r[k] = v
            metas = [m for m, _ in buffer]
            if self.rank == 0:
                tables = self.rows.build(metas, raw, self.quantities, side, self.layers_every)
                for reason, msg in self.rows.notes:
                    self._note_once(reason, msg)
                for table, rows in tables.items():
                    self.writer.append(table, rows)
                    sent.setdefault(table, []).extend(rows)
        if self.rank == 0:
            for table, row in self.rows.take_extra():
                self.writer.append(table, row)
                sent.setdefault(table, []).append(row)
            try:
                self.writer.flush()
            finally:  # the host rows the records got, to the dashboards (a failing one is dropped, never raises)
                self.sinks.write(sent)

    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM arrived (the trainer checkpoints and exits at the next step boundary)."""
        return self._stop_requested

    def state_dict(self) -> dict:
        return {"step": self.step_num, "rows": self.rows.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step"])
        self.rows.load_state_dict(state["rows"])

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
        if self._prev_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._prev_sigterm)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- SIGTERM
    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        """Schedulers send SIGTERM before killing: keep every record, then behave as before."""
        self._stop_requested = True
        if self.world_size > 1:
            return  # flushing is collective: it happens at the next step boundary
        self.log_event("preempt", "SIGTERM received: records flushed")
        self.flush()
        prev = self._prev_sigterm
        if callable(prev):
            prev(signum, frame)
        elif prev in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)


def _warn(reason: str, msg: str) -> None:
    warnings.warn(f"gradvar: {msg}", stacklevel=5)  # the user's Monitor.step call


def _flush_at_exit(ref) -> None:
    mon = ref()
    if mon is not None and not mon._closed:
        with contextlib.suppress(Exception):  # the interpreter is going down: never mask the original error
            mon.flush()
