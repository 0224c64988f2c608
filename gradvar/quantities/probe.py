"""Fixed held-out probes: the full-length probe loss (forward only) and the sequence-length probe.

The sequence-length probe cuts a fixed set of full-length sequences into pieces of each length of a ladder,
so every length sees the same tokens (the paper's claim, long sequences drive extreme variance early, is
about length at equal tokens), and measures over its micro-batches (one full-length sequence's pieces each,
so their count is the same at every length) the loss, gradient norm, tr(Sigma), |G|^2 and the largest
per-coordinate squared gradients: of the mean gradient, max_j G_j^2 (what Adam's v takes in), and of the
micro-batch gradients, max_j mean_k g_kj^2. Gradients come from torch.autograd.grad, so
`.grad`, the optimizer and the parameters are untouched; RNG state and train/eval mode are restored.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .. import _torch_compat as tc
from .base import SAME, Quantity, Stat, dense_then_every
from .grad_variance import noise_estimates
from .logits import attention_logit_max


def causal_lm_loss(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of a Hugging Face causal LM, or of a model returning (B, T, V) logits."""
    out = model(input_ids=input_ids, labels=input_ids) if _is_hf(model) else model(input_ids)
    if getattr(out, "loss", None) is not None:
        return out.loss
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), input_ids[:, 1:].reshape(-1))


def _is_hf(model) -> bool:
    return hasattr(model, "config") and hasattr(model, "get_output_embeddings")


@contextlib.contextmanager
def preserved(model, capture):
    """Run probe code without disturbing training: eval mode, RNG restored, gradient capture paused."""
    was_training = model.training
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    active = capture.active if capture is not None else None
    if capture is not None:
        capture.active = False
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if capture is not None:
            capture.active = active


class ProbeLoss(Quantity):
    """Loss of a fixed full-length held-out batch; comparable between baseline and SLW runs."""

    name = "probe_loss"

    def __init__(self, batch: torch.Tensor, schedule=None, loss_fn=causal_lm_loss, attention_logits: bool = False):
        super().__init__(schedule or dense_then_every(5, 30))
        self.batch, self.loss_fn, self.attention_logits = batch, loss_fn, attention_logits

    def on_step(self, ctx):
        if ctx.extras.get("rank", 0) != 0 and not ctx.sharded:  # an FSDP2 forward is collective: every rank
            return {}
        model = ctx.extras["module"]
        with preserved(model, ctx.capture), torch.no_grad():
            # kept on the device: a copy from (pageable) host memory at every probe would synchronise on CUDA
            x = self.batch = self.batch.to(ctx.params[0].device)
            if self.attention_logits:
                with attention_logit_max(model) as att:
                    loss = self.loss_fn(model, x)
                out = {"probe_loss": Stat(loss.detach().float(), SAME)}
                if att.value is not None:
                    out["max_attn_logit"] = Stat(att.value, SAME)
                return out
            return {"probe_loss": Stat(self.loss_fn(model, x).detach().float(), SAME)}

    def finalize(self, raw, meta, groups):
        cols = {}
        if "probe_loss" in raw:
            cols["probe_loss"] = raw["probe_loss"][:, 0]
        if "max_attn_logit" in raw:
            cols["max_attn_logit"] = raw["max_attn_logit"][:, 0]
        return cols, {}


class SeqlenProbe(Quantity):
    """Variance by truncation length on a fixed probe set; writes rows to the `probes` table."""

    name = "seqlen_probe"

    def __init__(self, batch: torch.Tensor, lengths=None, micro_batch: int = 1, schedule=None, loss_fn=causal_lm_loss):
        super().__init__(schedule)
        full = batch.shape[1]
        self.lengths = sorted(set(lengths or _ladder(full)))
        if batch.shape[0] // micro_batch < 2:
            raise ValueError("the sequence-length probe needs at least 2 micro-batches (batch >= 2 * micro_batch)")
        self.batch, self.micro, self.loss_fn = batch, micro_batch, loss_fn
        self.report_offset = 0
        """Tokens a piece shares with the next, and subtracted from its length in the records: 1 for a loss_fn
        that predicts L tokens from L + 1, so pieces of L + 1 overlapping by one predict disjoint tokens."""

    def on_step(self, ctx):
        # Under FSDP2 its torch.autograd.grad would fire FSDP's post-backward (a reduce-scatter into .grad):
        # not run there; the monitor notes it.
        if ctx.extras.get("rank", 0) != 0 or ctx.sharded:
            return {}
        model = ctx.extras["module"]
        self.batch = self.batch.to(ctx.params[0].device)  # once: a host-to-device copy synchronises on CUDA
        rows = []
        with preserved(model, ctx.capture):
            for length in self.lengths:
                rows.append(self._measure(model, ctx, length))
        for r in rows:
            r["step"] = ctx.step
        ctx.extras["side_rows"].extend(("probes", r) for r in rows)
        return {}

    def pieces(self, length: int) -> torch.Tensor:
        """(n * m, length) pieces, m = (L - offset) // (length - offset) per sequence, in sequence order."""
        full, stride = self.batch.shape[1], length - self.report_offset
        m = max(1, (full - self.report_offset) // stride)
        return torch.cat([self.batch[:, j * stride : j * stride + length] for j in range(m)], 1).reshape(-1, length)

    def _measure(self, model, ctx, length: int) -> dict:
        params = list(ctx.params)
        x = self.pieces(length)
        per_seq = x.shape[0] // self.batch.shape[0]
        chunks = x.split(self.micro * per_seq)  # the same K chunks (micro-batches) at every length
        total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        squares = [torch.zeros_like(t) for t in total]
        sq_sum, loss_sum = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
        for chunk in chunks:
            loss = self.loss_fn(model, chunk)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [g.float() if g is not None else torch.zeros_like(t) for g, t in zip(grads, total)]
            sq_sum += torch.stack(tc.foreach_norm(grads)).square().sum()
            tc.foreach_add_(total, grads)
            tc.foreach_addcmul_(squares, grads, grads)
            loss_sum += loss.detach().float()
        k = len(chunks)
        tc.foreach_div_(total, k)  # G = mean_k g_k
        gb = torch.stack(tc.foreach_norm(total)).square().sum()
        reported = length - self.report_offset
        return {
            "probe_seqlen": reported,
            "probe_tokens": x.shape[0] * reported,
            "loss": loss_sum / k,
            "grad_norm": gb.sqrt(),
            "_gs": sq_sum / k,
            "_gb": gb,
            "_k": k,
            "_b_s": self.micro * per_seq,
            "grad_sq_max": torch.stack([t.square().max() for t in total]).max(),
            "grad_sq_max_micro": torch.stack([q.max() for q in squares]).max() / k,
        }


def finalize_probe_rows(rows: list[dict]) -> list[dict]:
    """Host-side: turn the probe's raw moments into the probes table's columns."""
    import numpy as np

    out = []
    for r in rows:
        est = noise_estimates(
            np.float64(r.pop("_gs")), np.float64(r.pop("_gb")), np.float64(r.pop("_k")), np.float64(r.pop("_b_s"))
        )
        r.update({k: float(v) for k, v in est.items()})
        # Each sequence gradient averages probe_seqlen token gradients: scale back to per-token variance.
        r["grad_trace_sigma_per_token"] = r["grad_trace_sigma"] * r["probe_seqlen"]
        out.append(r)
    return out


def _ladder(full: int) -> list[int]:
    lengths, n = [], 64
    while n < full:
        lengths.append(n)
        n *= 2
    return [n for n in lengths if n >= 16] + [full]
