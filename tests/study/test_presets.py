"""The study presets: every run's config is valid and has K >= 2 micro-batches (so the gradient-noise columns
are recorded), arms are paired by seed, every run of a study has one token budget, and the designs hold what
their rules need."""

from collections import defaultdict

import pytest

from study.presets import STUDIES
from trainer.config import apply_overrides
from trainer.recipes import preset


def configs(name):
    study = STUDIES[name]()
    return study, [(s, apply_overrides(preset(study.preset), dict(s.overrides)).validate()) for s in study.runs]


@pytest.mark.parametrize("name", ["quick", "cpu", "gpu-117m", "smoke"])
def test_presets_are_paired_with_k_at_least_2(name):
    study, runs = configs(name)
    cells = defaultdict(set)
    for spec, cfg in runs:
        assert cfg.optim.batch_size // cfg.optim.micro_batch_size >= 2, spec.name
        assert cfg.optim.lr == spec.labels["lr"] and cfg.optim.batch_size == spec.labels["batch"]
        assert (cfg.slw.control == "batch") == (spec.labels["method"] == "batch-warmup")
        assert cfg.monitor.probe_loss_every == 1  # the probe loss at every step: spikes over steps
        assert not cfg.intervention.skip_spikes and not cfg.intervention.rewind_on_spike
        if spec.role != "reference":
            cells[spec.labels["method"], spec.labels["lr"]].add(cfg.seed)
    assert len({cfg.optim.train_tokens for _, cfg in runs}) == 1, "one token budget"
    assert len(set(map(frozenset, cells.values()))) == 1, "every arm and LR has the same seeds: paired"
    arms = {a for a, _ in cells}
    assert {"baseline", "slw", "batch-warmup"} < arms and any(a.startswith("warmup") for a in arms)


def test_cpu_design():
    study, runs = configs("cpu")
    assert len(runs) == 22
    ref = [(s, c) for s, c in runs if s.role == "reference"]
    assert [(c.optim.batch_size, c.optim.lr, c.optim.train_tokens // (8 * 512)) for _, c in ref] == [(8, 0.03, 200)] * 2
    large = {(s.labels["method"], s.labels["lr"]) for s, c in runs if c.optim.batch_size == 32}
    assert {lr for a, lr in large if a == "baseline"} == {0.03, 0.06, 0.12}
    assert {lr for a, lr in large if a == "warmup12"} == {0.06, 0.12, 0.24}
    assert all(c.monitor.probe_at for s, c in runs if s.labels["method"] == "baseline" and c.optim.batch_size == 32)


def test_gpu_117m_design():
    study, runs = configs("gpu-117m")
    assert len(runs) == 13 and study.preset == "gpt2-117m"
    for spec, cfg in runs:
        o = cfg.optim
        assert (o.batch_size, o.seq_len, o.train_tokens // (16 * 1024)) == (16, 1024, 100)
        assert o.lr == (6e-4 if spec.role == "reference" else 2.4e-3)
    seeds = defaultdict(set)
    for spec, cfg in runs:
        seeds[spec.labels["method"], spec.role].add(cfg.seed)
    assert seeds["baseline", "reference"] == {0}
    assert all(v == {0, 1, 2} for (a, role), v in seeds.items() if role != "reference")


def test_arms_differ_only_in_their_arm():
    """At one LR, batch and seed, runs differ only in the SLW, control and warmup fields (and what is recorded)."""
    _, runs = configs("cpu")
    same = [s for s, c in runs if s.labels["lr"] == 0.12 and c.optim.batch_size == 32 and c.seed == 0]
    keys = set().union(*(s.overrides for s in same))
    differ = {k for k in keys if len({repr(s.overrides.get(k)) for s in same}) > 1}
    measured = {k for k in differ if k.startswith("monitor.")}
    assert differ - measured <= {
        "slw.enabled",
        "slw.min_seqlen",
        "slw.total_steps",
        "slw.difficulty_step",
        "slw.control",
        "optim.warmup_steps",
    }
