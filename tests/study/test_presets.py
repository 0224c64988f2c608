"""The LR-sensitivity study presets: every run's config is valid, the arms are paired by seed, and the grids
span what the design needs (quick and gpu-117m: 3 arms; cpu: 4 arms, >= 2 seeds; all >= 30x in LR but quick)."""

from collections import defaultdict

import pytest

from study.presets import ARMS, STUDIES
from trainer.config import apply_overrides
from trainer.recipes import preset


@pytest.mark.parametrize("name", ["quick", "cpu", "gpu-117m", "smoke-lr"])
def test_lr_grid_presets(name):
    study = STUDIES[name]()
    cells = defaultdict(set)  # (arm, lr) -> seeds
    for spec in study.runs:
        cfg = apply_overrides(preset(study.preset), spec.overrides).validate()
        arm, lr = spec.labels["method"], spec.labels["lr"]
        assert cfg.optim.lr == lr and (cfg.slw.control == "batch") == (arm == "batch-warmup")
        assert not cfg.intervention.skip_spikes and not cfg.intervention.rewind_on_spike
        cells[arm, lr].add(cfg.seed)
    arms, lrs = {a for a, _ in cells}, {lr for _, lr in cells}
    assert arms == set(ARMS if name == "cpu" else ARMS[:3])
    assert len(set(map(frozenset, cells.values()))) == 1, "every (arm, LR) has the same seeds: paired"
    assert len(cells) == len(arms) * len(lrs)
    if name not in ("quick",):
        assert max(lrs) / min(lrs) >= 30
    if name == "cpu":
        assert len(next(iter(cells.values()))) >= 2
    assert {study.primary["baseline"], study.primary["slw"]} <= {s.group for s in study.runs}


def test_arms_differ_only_in_their_arm():
    """Paired arms: at one LR and seed, runs differ only in the SLW, control and warmup fields."""
    runs = [s for s in STUDIES["cpu"]().runs if s.labels["lr"] == 0.1 and s.overrides["seed"] == 0]
    keys = set().union(*(s.overrides for s in runs))
    differ = {k for k in keys if len({repr(s.overrides.get(k)) for s in runs}) > 1}
    measured = {k for k in differ if k.startswith("monitor.") or k == "checkpoint.steps"}  # records, not training
    assert differ - measured <= {
        "slw.enabled",
        "slw.min_seqlen",
        "slw.total_steps",
        "slw.difficulty_step",
        "slw.control",
        "optim.warmup_steps",
    }
