"""The training loop: HF GPT-2, AdamW, gradient accumulation, clipping, SLW, token-based cosine LR,
gradvar records, atomic checkpoints, exact resume, DDP through torchrun.

    gradvar train --preset tiny                                   # CPU, one process
    gradvar train --preset tiny --slw.enabled true --optim.lr 0.1 # SLW at a high LR
    torchrun --nproc_per_node 2 -m trainer.cli --preset tiny      # DDP, gloo on CPU
    torchrun --nproc_per_node 2 -m trainer.cli --preset tiny --parallel.strategy fsdp  # FSDP2, sharded
    torchrun --nproc_per_node 8 -m trainer.cli --preset gpt2-117m # one GPU node (NCCL, bf16)
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import gradvar
from gradvar.io import atomic_write_text
from gradvar.spikes import SpikeRule

from . import checkpoint as ckpt
from . import parallel
from .config import TrainConfig, slw_schedule
from .data import WindowSampler, fixed_windows, prepare
from .distributed import all_reduce_sum, any_rank, barrier, setup, teardown
from .interventions import DeviceZGate, SkipStepAdamW, rewind, rewind_needed, spike_keep
from .live import Progress, dashboard_sinks
from .lr import lr_at
from .model import build_model, compiled, count_params, mfu, param_groups
from .nonfinite import STOP, NonFiniteGuard
from .pacing import VariancePacer, adam_v_max
from .plant import parse_plant

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on SIGTERM after a checkpoint; resume with --resume
EXIT_NONFINITE = 3


class NonFiniteError(RuntimeError):
    pass


def next_token_loss(model, x: torch.Tensor) -> torch.Tensor:
    """Mean loss of predicting x[:, 1:] from x[:, :-1]: a window of L + 1 tokens trains L predictions."""
    # The default use_cache=True is kept on purpose: with no cache, transformers' mask code checks the
    # position ids for packed sequences with a host read (a GPU sync) in every forward.
    logits = model(input_ids=x[:, :-1]).logits  # (B, L, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), x[:, 1:].reshape(-1))


def versions() -> dict:
    import numpy
    import transformers

    return {
        "gradvar": gradvar.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, log=print):
        self.cfg, self.d = cfg, setup(cfg.device)
        cfg.validate(self.d.world_size)
        self._print = log if self.d.is_main else (lambda *a, **k: None)
        self.progress = None  # a bar on rank 0's terminal while the loop runs
        if self.d.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.run_dir = cfg.run_dir
        self._setup_data()
        self._setup_model()
        self.step, self.tokens, self.elapsed = 0, 0, 0.0
        self.slw = slw_schedule(cfg) if cfg.slw.enabled else None
        self.pacer = VariancePacer(self.slw) if self.slw and cfg.slw.schedule == "variance" else None
        self._best_loss, self.rewinds = math.inf, 0
        self._stop = False
        state = self._resume() if resume else None
        self._write_config()
        self._setup_monitor(resume_step=self.step if state else None)
        if state:
            self.monitor.load_state_dict(state["monitor"])
            self.monitor.log_event("resume", f"resumed from step {self.step}")

    # ------------------------------------------------------------------ setup
    def _setup_data(self):
        cfg, d = self.cfg, self.d
        if d.is_main:
            self.data = prepare(cfg.data)
        barrier(d)
        if not d.is_main:
            self.data = prepare(cfg.data)
        o = cfg.optim
        self.sampler = WindowSampler(self.data.train, o.seq_len, cfg.seed)
        self.val = fixed_windows(self.data.val, cfg.eval.batches * o.micro_batch_size, o.seq_len + 1)
        self.probe = fixed_windows(self.data.val, cfg.monitor.probe_sequences, o.seq_len + 1, offset=0.5)

    def _setup_model(self):
        cfg, d = self.cfg, self.d
        self.model = build_model(cfg.model, self.data.vocab_size).to(d.device)
        self.n_params = count_params(self.model)
        self.par = parallel.make(cfg.parallel.strategy, d)
        bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and d.device.type == "cuda")
        casts = self.par.shard(self.model, bf16)  # before the optimizer: it must hold the sharded parameters
        bf16 = bf16 and not casts  # FSDP2 casts to bf16 itself (its mixed-precision policy): no autocast
        o = cfg.optim
        kw = {"fused": True} if o.fused else {}
        self.plant = parse_plant(cfg.intervention.plant)  # test-only: a known cause at one step
        groups = param_groups(self.model, o.weight_decay, self.plant.group if self.plant else "")
        iv = cfg.intervention
        if iv.skip_spikes:
            rule = SpikeRule(z_k=iv.spike_z)
            self.opt = SkipStepAdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
            self.gates = (DeviceZGate(rule, d.device), DeviceZGate(rule, d.device))
        else:
            self.opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, **kw)
        # what the training forwards go through: DDP's wrapper, else the model itself (FSDP2-sharded or plain)
        self.train_model = self.par.wrap(self.model)
        self.train_loss = compiled(next_token_loss, cfg.model.compile)  # the training forward only
        self.autocast = (
            (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        )

    def _setup_monitor(self, resume_step):
        m = self.cfg.monitor
        ladder = [int(n) for n in m.probe_seqlens] or gradvar.quantities.seqlen_ladder(self.cfg.optim.seq_len)
        qs = gradvar.quantities.build(
            m.quantities,
            self.probe,
            m.probe_every,
            m.probe_loss_every,
            1,
            [n + 1 for n in ladder],
            self._probe_loss,
            probe_at=m.probe_at,
        )
        for q in qs:
            if isinstance(q, gradvar.quantities.SeqlenProbe):
                q.report_offset = 1  # windows of L + 1 tokens train L predictions: pieces overlap by 1, report L
        self.monitor = gradvar.Monitor(
            self.train_model,
            self.opt,
            self.run_dir,
            qs,
            flush_every=m.flush_every,
            resume_step=resume_step,
            handle_sigterm=False,
            infer_inputs=False,
            notify=self._monitor_note,
            sinks=dashboard_sinks(self.cfg),
        )
        self.guard = NonFiniteGuard(self.cfg.intervention.nonfinite, self.opt, self.monitor)

    def log(self, msg: str) -> None:
        (self.progress.write if self.progress else self._print)(msg)

    def _monitor_note(self, reason: str, msg: str) -> None:
        """The monitor's once-per-run notes, in the log; the one-micro-batch note names the flag to set."""
        o = self.cfg.optim
        if reason == "single_micro_batch":
            msg = (
                f"one micro-batch per step (optim.batch_size {o.batch_size} = micro_batch_size x ranks), so the "
                f"gradient-variance columns stay NaN; --optim.micro_batch_size {max(1, o.micro_batch_size // 2)} "
                "measures them"
            )
        self.log(f"note: {msg}")

    def _probe_loss(self, model, x):
        with self.autocast():
            return next_token_loss(model, x)

    def _write_config(self):
        if not self.d.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = self.cfg.to_dict()
        data["meta"] = {
            "method": self.method,
            "versions": versions(),
            "git_commit": git_commit(),
            "world_size": self.d.world_size,
            "device": str(self.d.device),
            "n_params": self.n_params,
            "device_name": torch.cuda.get_device_name(self.d.device)
            if self.d.device.type == "cuda"
            else platform.processor() or "cpu",
            "machine": f"{platform.machine()} {platform.system()}",
            "vocab_size": self.data.vocab_size,
            "data": {k: v for k, v in self.data.meta.items() if not k.endswith("documents")},
            "command": " ".join(sys.argv),
        }
        atomic_write_text(self.run_dir / "config.json", json.dumps(data, indent=2, default=str))

    @property
    def method(self) -> str:
        if self.cfg.slw.enabled and self.cfg.slw.control == "batch":
            return "batch-warmup"
        return "slw" if self.cfg.slw.enabled else "baseline"

    # ------------------------------------------------------------------ checkpoints
    def _resume(self):
        found = self.par.load_latest(self.run_dir, self.model, self.opt, self.log)
        if found is None:
            self.log(f"no checkpoint in {self.run_dir}; starting from scratch")
            return None
        state, path = found
        self.sampler.load_state_dict(state["sampler"])
        ckpt.restore_rng(state)
        self.step, self.tokens, self.elapsed = int(state["step"]), int(state["tokens"]), float(state["elapsed"])
        if self.pacer and state.get("pacer"):
            self.pacer.load_state_dict(state["pacer"])
        self.log(f"resumed from {path} at step {self.step} ({self.tokens:,} tokens)")
        return state

    def save_checkpoint(self):
        state = {
            "sampler": self.sampler.state_dict(),
            **ckpt.rng_state(),
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "monitor": self.monitor.state_dict(),
            "pacer": self.pacer.state_dict() if self.pacer else None,
        }
        self.guard.resolve()
        self.monitor.flush()  # records first: a checkpoint never points past what is on disk
        c = self.cfg.checkpoint
        path = self.par.save(self.run_dir, self.step, self.model, self.opt, state, c.keep, [int(s) for s in c.steps])
        if self.d.is_main:
            self.monitor.log_event("checkpoint", f"saved {path.name}")
        barrier(self.d)

    # ------------------------------------------------------------------ the loop
    def seqlen_at(self, step: int) -> int:
        if self.pacer:
            return self.pacer.seqlen(step)
        return self.slw.seqlen(step) if self.slw else self.cfg.optim.seq_len

    def step_shape(self, step: int) -> tuple[int, int, int]:
        """(sequences, length, micro-batch size) of a step. SLW truncates the batch to the schedule's length;
        its token-matched control keeps full-length sequences and scales the number of them (and of each
        micro-batch, so the step keeps its micro-batch count) by length / seq_len: the same tokens per step."""
        o, length = self.cfg.optim, self.seqlen_at(step)
        if self.cfg.slw.enabled and self.cfg.slw.control == "batch":
            matched = gradvar.token_matched_batch
            return matched(o.batch_size, length, o.seq_len), o.seq_len, matched(o.micro_batch_size, length, o.seq_len)
        return o.batch_size, length, o.micro_batch_size

    def done(self) -> bool:
        o = self.cfg.optim
        return self.tokens >= o.train_tokens or (o.max_steps > 0 and self.step >= o.max_steps)

    def tokens_left(self) -> int:
        """Training tokens until the run ends: at the token budget, or at --optim.max_steps when the steps up to
        it (each of the tokens its shape gives, SLW's shorter ones too) come to fewer."""
        o = self.cfg.optim
        left = max(o.train_tokens - self.tokens, 0)
        to_cap, step = 0, self.step
        while o.max_steps > 0 and step < o.max_steps and to_cap < left:  # at most the budget's steps
            step += 1
            rows, length, _ = self.step_shape(step)
            to_cap += rows * length
        return min(to_cap, left) if o.max_steps > 0 else left

    def train_step(self) -> list[torch.Tensor]:
        """One optimizer step over this rank's share of the global batch; returns micro-batch losses."""
        cfg, d = self.cfg, self.d
        o = cfg.optim
        step = self.step + 1
        rows, seqlen, micro_size = self.step_shape(step)
        lr = lr_at(step, self.tokens, o.lr, o.min_lr, o.warmup_steps, o.train_tokens)
        for g in self.opt.param_groups:
            g["lr"] = lr * self.plant.lr_scale(step, g) if self.plant else lr
        # (B, T + 1), the same on every rank; the control keeps the first rows, so its data stays step-aligned
        batch = self.sampler.next_batch(o.batch_size)[:rows]
        if self.plant:
            batch = self.plant.replace_batch(step, batch, self.data.vocab_size, cfg.seed)
        per_rank = rows // d.world_size
        local = gradvar.truncate(batch[d.rank * per_rank : (d.rank + 1) * per_rank], seqlen + 1).contiguous()
        if d.device.type == "cuda":  # pinned: the copy is queued behind the GPU's work, the host never waits
            local = local.pin_memory()
        micro = local.to(d.device, non_blocking=True).split(micro_size)
        losses = []
        for i, mb in enumerate(micro):
            with self.par.sync(self.train_model, i == len(micro) - 1), self.autocast():
                loss = self.train_loss(self.train_model, mb)
            (loss / len(micro)).backward()
            losses.append(loss.detach())
        norm = self.monitor.clip_grad_norm_(o.clip if o.clip > 0 else math.inf)
        extra = {}
        if self.cfg.intervention.skip_spikes:  # decided on the device: no sync
            self.opt.keep = spike_keep(list(zip(self.gates, (torch.stack(losses).mean(), norm))))
            extra["update_skipped"] = 1.0 - self.opt.keep
        outcome = self.guard.apply(step, losses, norm)
        if outcome == STOP:
            self._stop_nonfinite(step, losses)
        if self.guard.last_flag is not None:  # a spike skip (set above) already counts non-finite steps
            extra.setdefault("update_skipped", self.guard.last_flag)
        self.tokens += rows * seqlen
        self.step = step
        if self.pacer:
            extra["pacing_action"] = {"advance": 0.0, "hold": 1.0, "back": 2.0}[
                self.pacer.observe(adam_v_max(self.opt))
            ]
        self.monitor.step(loss=losses, seqlen=seqlen, tokens=self.tokens, lr=lr, batch_size=rows, extra=extra)
        self.opt.zero_grad(set_to_none=True)
        return losses

    def _stop_nonfinite(self, step, losses):
        """intervention.nonfinite=stop: record the bad step, then end the run naming it."""
        rows, seqlen, _ = self.step_shape(step)
        self.monitor.step(loss=losses, seqlen=seqlen, tokens=self.tokens, batch_size=rows)
        self.step = step
        self.monitor.flush()
        raise NonFiniteError(self._nonfinite_report(step))

    def _nonfinite_report(self, step: int) -> str:
        steps = gradvar.read_records(self.run_dir, ["steps"])["steps"].tail(12)
        cols = [
            c for c in ("step", "seqlen", "lr", "loss", "grad_norm", "adam_v_max", "grad_trace_sigma") if c in steps
        ]
        return (
            f"non-finite loss or gradient at step {step} (intervention.nonfinite=stop). "
            f"The signals over the last steps before it:\n{steps[cols].to_string(index=False)}"
        )

    def evaluate(self) -> float:
        """Mean loss on the fixed full-length held-out windows, shared across ranks."""
        self.model.eval()
        d, m = self.d, self.cfg.optim.micro_batch_size
        chunks = parallel.eval_chunks(list(self.val.split(m)), d, self.par.collective_forward)
        total = torch.zeros(2, device=d.device)
        with torch.no_grad(), self.autocast():
            for x, weight in chunks:
                total[0] += next_token_loss(self.model, x.to(d.device)).float() * len(x) * weight
                total[1] += len(x) * weight
        self.model.train()
        total = all_reduce_sum(total, d)
        return float(total[0] / total[1])  # sync: evaluation only

    def run(self) -> dict:
        o = self.cfg.optim
        total, unit = (o.max_steps, "step") if o.max_steps else (o.train_tokens, "tok")
        if self.d.is_main:
            self.progress = Progress(
                total, unit=unit, desc=self.cfg.name, log=self._print, initial=self.step if o.max_steps else self.tokens
            )
        try:
            return self._run()
        except BaseException:
            if self.d.world_size == 1:  # keep every finished step's record (a collective flush could hang)
                with contextlib.suppress(Exception):  # never mask the error being raised
                    self.guard.resolve()
                with contextlib.suppress(Exception):
                    self.monitor.flush()
            raise
        finally:
            if self.progress:
                self.progress.close()
                self.progress = None

    def _run(self) -> dict:
        self._install_sigterm()
        self.model.train()
        t_last, tok_last = time.perf_counter(), self.tokens
        val = None  # None: no evaluation at the current step in this process (a resumed finished run too)
        while not self.done():
            losses = self.train_step()
            cfg = self.cfg
            if self.progress:
                self.progress.update_to(self.step if cfg.optim.max_steps else self.tokens)
            if cfg.intervention.rewind_on_spike and self._maybe_rewind(losses):
                continue
            if self.step % cfg.log_every == 0:
                self.guard.resolve()  # the progress line reads device values here anyway
                now = time.perf_counter()
                self.elapsed += now - t_last
                self._progress(losses, (self.tokens - tok_last) / max(now - t_last, 1e-9))
                t_last, tok_last = now, self.tokens
                if self.d.world_size > 1 and any_rank(self._stop, self.d):
                    return self._preempt()
            if self._stop and self.d.world_size == 1:
                return self._preempt()
            if cfg.eval.every and self.step % cfg.eval.every == 0:
                val = self._eval_and_log()
            if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or self.step in cfg.checkpoint.steps:
                self.save_checkpoint()
        self.elapsed += time.perf_counter() - t_last
        if val is None or not (self.cfg.eval.every and self.step % self.cfg.eval.every == 0):
            val = self._eval_and_log()
        self.save_checkpoint()
        return self._finish(val)

    def _maybe_rewind(self, losses) -> bool:
        """PaLM-style: on a loss spike after warmup, go back to the newest checkpoint and skip batches."""
        loss = float(torch.stack(losses).mean())  # sync: the rewind is a host decision
        rule = SpikeRule()
        late = self.step > self.cfg.optim.warmup_steps and self.rewinds < 20
        if late and rewind_needed(loss, self._best_loss, rule) and rewind(self, self.step, loss):
            self.rewinds += 1
            return True
        if math.isfinite(loss):
            self._best_loss = min(self._best_loss, loss)
        return False

    def _eval_and_log(self) -> float:
        val = self.evaluate()
        self.monitor.log_row("evals", {"val_loss": val, "val_ppl": math.exp(min(val, 50)), "time_s": self.elapsed})
        self.log(f"step {self.step:>6} | val loss {val:.4f} | ppl {math.exp(min(val, 50)):.1f}")
        return val

    def _progress(self, losses, tok_per_s):
        o = self.cfg.optim
        loss = float(torch.stack(losses).mean())  # sync: progress line only
        eta = self.tokens_left() / max(tok_per_s, 1e-9)
        util = math.nan
        if self.d.device.type == "cuda":  # NaN for a chip without a known peak: then no MFU is printed
            util = mfu(
                tok_per_s,
                self.cfg.model,
                self.n_params,
                self.step_shape(self.step)[1],
                torch.cuda.get_device_name(self.d.device),
                self.d.world_size,
            )
        mfu_text = f" | MFU {util:.1%}" if math.isfinite(util) else ""
        if self.progress:
            self.progress.update_to(self.step if o.max_steps else self.tokens, f"loss {loss:.4f}")
        self.log(
            f"step {self.step:>6} | loss {loss:.4f} | lr {self.opt.param_groups[0]['lr']:.2e} | seqlen "
            f"{self.step_shape(self.step)[1]:>5} | {tok_per_s:,.0f} tok/s{mfu_text} | ETA {eta / 60:.1f} min"
        )

    def _install_sigterm(self):
        def handler(signum, frame):
            self._stop = True

        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, handler)

    def _preempt(self) -> dict:
        self.monitor.log_event("preempt", f"SIGTERM: checkpoint at step {self.step}, exiting {EXIT_PREEMPTED}")
        self.save_checkpoint()
        self.monitor.close()
        self.log(f"preempted: checkpoint written at step {self.step}; resume with --resume {self.run_dir}")
        return {"preempted": True, "step": self.step}

    def _finish(self, val) -> dict:
        self.guard.resolve()
        self.monitor.close()
        summary = {
            "name": self.cfg.name,
            "method": self.method,
            "steps": self.step,
            "tokens": self.tokens,
            "final_val_loss": val,
            "final_val_ppl": math.exp(min(val, 50)),
            "wall_time_s": self.elapsed,
            "tokens_per_s": self.tokens / max(self.elapsed, 1e-9),
            "train_split_tokens": len(self.data.train),
            "epochs": self.tokens / max(len(self.data.train), 1),  # random windows: expected passes over the split
            "n_params": self.n_params,
        }
        if self.d.is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def close(self):
        teardown()
