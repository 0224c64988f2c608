"""Fixed held-out probes: the full-length probe loss (forward only) and the sequence-length probe.

The sequence-length probe measures, at each length of a ladder, loss, gradient norm, tr(Sigma), |G|^2 and
the largest per-coordinate squared gradient, on the same tokens at every length: each full-length probe
sequence is cut into consecutive pieces of that length (every piece of every sequence), so a length sees
the probe's tokens with shorter context rather than fewer of them. A micro-batch holds the pieces of the same
`micro_batch` sequences at every length, so the number of micro-batches K does not change with length.
`grad_sq_max` = max_j G_j^2 (what Adam's v takes in from the mean gradient G) and `grad_sq_max_micro` =
max_j mean_k g_kj^2 (the per-micro-batch second moment) can therefore differ between lengths only through
context. Gradients come from torch.autograd.grad, so `.grad`, the optimizer and the parameters are untouched;
RNG state and train/eval mode are restored.
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
    writes = columns = frozenset({"probe_loss", "max_attn_logit"})
    reads_state = False  # forwards only

    def __init__(self, batch: torch.Tensor, schedule=None, loss_fn=causal_lm_loss, attention_logits: bool = False):
        super().__init__(schedule or dense_then_every(5, 30))
        self.batch, self.loss_fn, self.attention_logits = batch, loss_fn, attention_logits

    def on_step(self, ctx):
        if ctx.rank != 0 and not ctx.sharded:  # an FSDP2 forward is collective: every rank
            return {}
        model = ctx.model
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


def probe_pieces(batch: torch.Tensor, length: int, offset: int = 0, micro: int = 1) -> list[torch.Tensor]:
    """The (n, F) batch as K = n // micro micro-batches of pieces of `length` tokens.

    Consecutive pieces of a sequence overlap by `offset` tokens: a loss that predicts length - offset tokens
    from `length` then predicts disjoint tokens, floor((F - offset) / (length - offset)) pieces per sequence.
    Micro-batch k holds every piece of sequences k * micro ... (k + 1) * micro - 1 (leftover sequences unused).
    """
    n, full = batch.shape
    stride = length - offset
    if stride < 1 or length > full:
        raise ValueError(f"probe length {length} must exceed the offset {offset} and be at most {full}")
    pieces = batch.unfold(1, length, stride)  # (n, per_seq, length)
    k = n // micro
    return list(pieces[: k * micro].reshape(k, micro * pieces.shape[1], length).unbind(0))


class SeqlenProbe(Quantity):
    """Variance by length at equal tokens on a fixed probe set; writes rows to the `probes` table. `lengths`:
    16, 32, 64 ... up to the probe sequences' length when not given."""

    name = "seqlen_probe"
    needs_full_params = True  # gradients of whole parameters, by torch.autograd.grad
    reads_state = False

    def __init__(self, batch: torch.Tensor, lengths=None, micro_batch: int = 1, schedule=None, loss_fn=causal_lm_loss):
        super().__init__(schedule)
        full = batch.shape[1]
        self.lengths = sorted(set(lengths or seqlen_ladder(full)))
        if batch.shape[0] // micro_batch < 2:
            raise ValueError("the sequence-length probe needs at least 2 micro-batches (batch >= 2 * micro_batch)")
        if self.lengths[-1] > full:
            raise ValueError(f"probe lengths {self.lengths} exceed the probe sequences' length {full}")
        self.batch, self.micro, self.loss_fn = batch, micro_batch, loss_fn
        self.report_offset = 0
        """Tokens a piece's loss does not predict (a loss_fn that predicts L tokens from L + 1: 1): pieces overlap
        by it, and it is subtracted from the length in the records."""

    def on_step(self, ctx):
        if ctx.rank != 0:
            return {}
        model = ctx.model
        self.batch = self.batch.to(ctx.params[0].device)  # once: a host-to-device copy synchronises on CUDA
        rows = []
        with preserved(model, ctx.capture):
            for length in self.lengths:
                rows.append(self._measure(model, ctx, length))
        for r in rows:
            r["step"] = ctx.step
        ctx.add_rows("probes", rows)
        return {}

    def _measure(self, model, ctx, length: int) -> dict:
        params = list(ctx.params)
        chunks = probe_pieces(self.batch, length, self.report_offset, self.micro)
        total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        second = [torch.zeros_like(t) for t in total]  # sum_k g_kj^2, per coordinate
        sq_sum, loss_sum = torch.zeros((), device=self.batch.device), torch.zeros((), device=self.batch.device)
        for chunk in chunks:
            loss = self.loss_fn(model, chunk)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [g.float() if g is not None else torch.zeros_like(t) for g, t in zip(grads, total)]
            sq_sum += torch.stack(tc.foreach_norm(grads)).square().sum()
            tc.foreach_add_(total, grads)
            tc.foreach_addcmul_(second, grads, grads)
            loss_sum += loss.detach().float()
        k = len(chunks)
        tc.foreach_div_(total, k)  # G = mean_k g_k
        tc.foreach_div_(second, k)
        gb = torch.stack(tc.foreach_norm(total)).square().sum()
        reported = length - self.report_offset
        return {
            "probe_seqlen": reported,
            "probe_tokens": k * chunks[0].shape[0] * reported,
            "loss": loss_sum / k,
            "grad_norm": gb.sqrt(),
            "_gs": sq_sum / k,
            "_gb": gb,
            "_k": k,
            "_b_s": chunks[0].shape[0],  # pieces per micro-batch: tr(Sigma) comes out per piece
            # max |x| squared is max x^2 exactly (rounding is monotone)
            "grad_sq_max": torch.stack(tc.foreach_norm(total, float("inf"))).max().square(),
            "grad_sq_max_micro": torch.stack(tc.foreach_norm(second, float("inf"))).max(),
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
        # Each piece gradient averages probe_seqlen token gradients: scale back to per-token variance.
        r["grad_trace_sigma_per_token"] = r["grad_trace_sigma"] * r["probe_seqlen"]
        out.append(r)
    return out


def seqlen_ladder(full: int, shortest: int = 16) -> list[int]:
    """The probe's default lengths: shortest, 2 * shortest, ... below `full`, then `full`."""
    lengths, n = [], shortest
    while n < full:
        lengths.append(n)
        n *= 2
    return lengths + [full]
