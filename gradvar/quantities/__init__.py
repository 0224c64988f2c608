"""One small class per measured quantity; `build(preset, ...)` assembles the named presets."""

from __future__ import annotations

from .adam_state import AdamState
from .base import FlushMeta, Quantity, Stat, StepContext, StepFacts, any_of, at_steps, dense_then_every, every
from .grad_norm import GradNorm
from .grad_variance import GradVariance, noise_estimates
from .logits import OutputLogit
from .loss import Loss
from .probe import ProbeLoss, SeqlenProbe, causal_lm_loss, seqlen_ladder
from .update_size import UpdateSize

PRESETS = ("paper", "full", "minimal")
ELEMENTWISE_EVERY = 20
"""`paper` measures grad_var_max at steps 1, 21, 41, ...: the element-wise moment costs about 4K + 3 passes over
the gradients at K micro-batches, more than everything else the preset reads (K + 5); every 20 steps it adds
at most 0.2K + 0.15 per step, and `full` keeps it every step."""
LOGIT_EVERY = 10
"""`full` reads the output logits (max_output_logit) at every step up to step 30, then every 10 steps, as the
probe loss's default: a read of the B x T x V logits per micro-batch costs more than all of `paper` on a small
model (on CPU, `tiny` at K = 4: 1.6% of the step every step)."""


def build(
    preset: str,
    probe_batch=None,
    probe_every: int = 100,
    probe_loss_every: int = 10,
    probe_micro_batch: int = 1,
    probe_seqlens=None,
    loss_fn=causal_lm_loss,
    probe_at=(),
) -> list[Quantity]:
    """paper: loss, Adam variance state, gradient variance (grad_var_max every ELEMENTWISE_EVERY steps), grad norm
    (+ probe loss with a probe batch).
    full: everything, the sequence-length probe (every `probe_every` steps and at the steps `probe_at`), update
    size and logit maxima (max_output_logit every step up to 30, then every LOGIT_EVERY) included.
    minimal: loss only."""
    if preset not in PRESETS:
        raise ValueError(f"unknown quantities preset {preset!r}; choose one of {PRESETS}")
    if preset == "minimal":
        return [Loss()]
    full = preset == "full"
    variance = GradVariance() if full else GradVariance(elementwise_at=every(ELEMENTWISE_EVERY))
    qs: list[Quantity] = [Loss(), GradNorm(), variance, AdamState()]
    if full:
        qs += [UpdateSize(), OutputLogit(dense_then_every(LOGIT_EVERY, 30))]
    if probe_batch is not None:
        qs.append(ProbeLoss(probe_batch, dense_then_every(probe_loss_every, 30), loss_fn, attention_logits=full))
        if full:
            schedule = any_of(every(probe_every), at_steps(probe_at))
            qs.append(SeqlenProbe(probe_batch, probe_seqlens, probe_micro_batch, schedule, loss_fn))
    return qs


def resolve(quantities, probe: dict) -> list:
    """The quantities to run: a preset by name, configured by the probe options, or the caller's list.
    An option that would configure nothing is an error, never silently ignored."""
    given = {k: v for k, v in probe.items() if v is not None}
    if not isinstance(quantities, str):
        if given:
            raise TypeError(
                f"Monitor({', '.join(given)}=...) configures the presets' probes only; with a list of "
                "quantities, configure them there: ProbeLoss(batch, schedule, loss_fn), "
                "SeqlenProbe(batch, lengths, micro_batch, schedule, loss_fn)"
            )
        return complete(quantities)
    if probe["probe_batch"] is None and given:
        raise TypeError(f"Monitor({', '.join(given)}=...) needs probe_batch= (the held-out batch the probes run on)")
    seqlen_only = [k for k in ("probe_every", "probe_micro_batch", "probe_seqlens") if k in given]
    if seqlen_only and quantities != "full":
        raise TypeError(
            f"Monitor({', '.join(seqlen_only)}=...) configures the sequence-length probe, which only the "
            f"'full' preset runs (quantities={quantities!r})"
        )
    defaults = {"probe_every": 100, "probe_loss_every": 10, "probe_micro_batch": 1, "loss_fn": causal_lm_loss}
    opts = {**defaults, **given}
    return complete(
        build(
            quantities,
            probe["probe_batch"],
            opts["probe_every"],
            opts["probe_loss_every"],
            opts["probe_micro_batch"],
            probe["probe_seqlens"],
            opts["loss_fn"],
        )
    )


PROVIDERS = (Loss, GradNorm, GradVariance, AdamState, UpdateSize, OutputLogit)
"""The quantities `complete` may add, with their defaults, when another requires what they write."""


def complete(quantities) -> list[Quantity]:
    """The quantities with the writer of each name another requires added (run at the steps of those that
    require it), after checking that no name is written twice: a second writer would overwrite the first's
    values silently, and a requirement left unmet would leave the requirer's columns empty without a word."""
    qs = list(quantities)
    while True:
        _one_writer_each(qs)
        users: dict[type, list[Quantity]] = {}
        for q in qs:
            for name in sorted(q.requires - {n for p in qs for n in p.writes}):
                provider = next((c for c in PROVIDERS if name in c.writes), None)
                if provider is None:
                    raise ValueError(f"gradvar: the {q.name} quantity requires {name!r}, which no quantity writes")
                users.setdefault(provider, []).append(q)
        if not users:
            return qs
        for provider, needing in users.items():
            schedules = [q.schedule for q in needing]
            qs.append(provider(schedules[0] if len(schedules) == 1 else any_of(*schedules)))


def _one_writer_each(qs: list[Quantity]) -> None:
    writer: dict[str, Quantity] = {}
    for q in qs:
        for name in sorted(q.writes | q.columns):
            other = writer.setdefault(name, q)
            if other is not q:
                raise ValueError(
                    f"gradvar: the {other.name} and {q.name} quantities both write {name!r}, and the second "
                    "would overwrite the first; keep one of them"
                )


def shard_local(quantities) -> tuple[list[Quantity], list[str]]:
    """(the quantities that run on a rank's shard, the names of those that need whole parameters), for FSDP2
    and DeepSpeed ZeRO: the latter do not run there, and the monitor notes why."""
    return [q for q in quantities if not q.needs_full_params], [q.name for q in quantities if q.needs_full_params]


__all__ = [
    "ELEMENTWISE_EVERY",
    "LOGIT_EVERY",
    "AdamState",
    "FlushMeta",
    "GradNorm",
    "GradVariance",
    "Loss",
    "OutputLogit",
    "ProbeLoss",
    "Quantity",
    "SeqlenProbe",
    "Stat",
    "StepContext",
    "StepFacts",
    "UpdateSize",
    "any_of",
    "at_steps",
    "build",
    "complete",
    "resolve",
    "seqlen_ladder",
    "shard_local",
    "causal_lm_loss",
    "dense_then_every",
    "every",
    "noise_estimates",
]
