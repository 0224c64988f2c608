"""What a forward call tells about its micro-batch: sequences, sequence length, tokens; and its loss.

Read from host-side shapes only (no device sync). The batch dimension is the first dimension of the first
tensor argument: `input_ids` when given, else the first tensor among the positional arguments, keyword
arguments and the values of a dict argument (`model(batch)`, `model(**batch)`). Sequence length and tokens
come from an integer (token id) tensor of two or more dimensions; other inputs give sequences only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MicroBatch:
    sequences: int
    seqlen: int | None = None
    tokens: int | None = None


def _tensors(args, kwargs):
    if isinstance(kwargs.get("input_ids"), torch.Tensor):
        yield kwargs["input_ids"]
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            if isinstance(value.get("input_ids"), torch.Tensor):
                yield value["input_ids"]
            yield from (v for v in value.values() if isinstance(v, torch.Tensor))


def describe(args=(), kwargs=None) -> MicroBatch | None:
    """The micro-batch a forward received, or None when no tensor argument has a batch dimension."""
    kwargs = kwargs or {}
    first = next((t for t in _tensors(args, kwargs) if t.dim() >= 1), None)
    if first is None:
        return None
    ids = next(
        (
            t
            for t in _tensors(args, kwargs)
            if t.dim() >= 2 and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool
        ),
        None,
    )
    if ids is None or ids.shape[0] != first.shape[0]:
        return MicroBatch(int(first.shape[0]))
    return MicroBatch(int(ids.shape[0]), int(ids.shape[1]), int(ids.numel()))


def output_loss(out) -> torch.Tensor | None:
    """The loss a forward returned: `.loss` (Hugging Face outputs), a dict's "loss", or the one scalar
    floating-point tensor of a tuple such as nanoGPT's (logits, loss); None when absent or ambiguous."""
    if isinstance(out, dict):
        loss = out.get("loss")
    elif isinstance(out, (tuple, list)):
        scalars = [t for t in out if isinstance(t, torch.Tensor) and t.dim() == 0 and t.is_floating_point()]
        loss = scalars[0] if len(scalars) == 1 else None
    else:
        loss = getattr(out, "loss", None)
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


class StepInputs:
    """What the step's forwards received (host values) and the losses they returned (device values)."""

    def __init__(self):
        self.forwards = self.sequences = self.tokens = 0
        self.seqlen: int | None = None
        self.losses: list[torch.Tensor] = []
        self.described = True  # False once a forward had no tensor argument with a batch dimension

    def add(self, mb: MicroBatch | None) -> None:
        self.forwards += 1
        if mb is None:
            self.described = False
            return
        self.sequences += mb.sequences
        if mb.tokens is not None:
            self.tokens += mb.tokens
            self.seqlen = mb.seqlen

    def add_loss(self, loss: torch.Tensor) -> None:
        """A loss a forward returned (a 0-dim device tensor)."""
        self.losses.append(loss)

    def sequences_per_step(self, passes: int, world_size: int, tokens: int | None, seqlen) -> tuple[int | None, str]:
        """Sequences of the step, all ranks, and why they are unknown ("" when known). From the forwards when
        there was one per backward pass, else from the step's tokens and sequence length."""
        if self.forwards and self.described and self.forwards == passes:
            return self.sequences * world_size, ""
        if tokens is not None and seqlen:
            n, rest = divmod(int(tokens), int(seqlen))
            if n and not rest:
                return n, ""
        if not self.forwards:
            return None, "no forward of the model was seen with gradients enabled (infer_inputs=False?)"
        if not self.described:
            return None, "the model's forward received no tensor with a batch dimension"
        return None, (
            f"{self.forwards} forwards with gradients enabled for {passes} backward passes, so the "
            "sequences per micro-batch are ambiguous"
        )

    def meta(self, step: int, passes: int, world_size: int, prev_tokens: int, **given) -> tuple[dict, str]:
        """The step's host columns, each the caller's value (given: seqlen, tokens, batch_size, lr, time_s;
        None = infer) or inferred from the forwards; and why the batch size stays unknown ("" when known)."""
        tokens = given["tokens"]
        tokens = int(prev_tokens + self.tokens * world_size if tokens is None else tokens)
        seqlen = given["seqlen"] if given["seqlen"] is not None else self.seqlen
        batch_size, why = given["batch_size"], ""
        if batch_size is None and passes:
            batch_size, why = self.sequences_per_step(passes, world_size, tokens - prev_tokens, seqlen)
        meta = {
            "step": step,
            "tokens": tokens,
            "seqlen": seqlen,
            "batch_size": batch_size,
            "lr": float(given["lr"]),
            "time_s": given["time_s"],
            "k_local": passes,
            "step_tokens": tokens - prev_tokens,
        }
        return meta, why


def loss_share(kwargs) -> tuple | None:
    """(N, n): a Hugging Face causal LM given `num_items_in_batch` (Trainer passes it under gradient
    accumulation) returns sum of its n label tokens' losses / N, the tokens of the whole step, instead of its
    mean. Device values: no sync."""
    total, labels = kwargs.get("num_items_in_batch"), kwargs.get("labels")
    if total is None or not isinstance(labels, torch.Tensor):
        return None
    if isinstance(total, torch.Tensor):
        if total.numel() != 1:  # DataParallel's per-replica counts: leave the loss as the model gives it
            return None
        total = total.detach().float().reshape(())
    return total, (labels[..., 1:] != -100).sum().clamp(min=1)  # the shifted labels the loss counts
