"""What moved first, on real training runs with a known cause (the smoke preset, `intervention.plant`): a group's
LR x100 at one step must be named first; a corrupted batch must be blamed on the batch; an LR warmup spike with
no local cause must not get one. Each run is a few seconds of CPU training with the full gradvar records."""

import json

import pytest

from analysis.diagnosis import diagnose
from analysis.diagnosis.attribution import NO_LEAD, attribution_lines
from analysis.diagnosis.cli import main as diagnose_main
from analysis.records.load import load_run
from analysis.report.attribution_section import attribution_section

PLANT = 20
# Constant LR after the preset's 5 warmup steps, so the planted step is judged against steady training.
STEADY = {
    "monitor.quantities": "full",  # per-group update size and the sequence-length probe
    "monitor.probe_every": 8,
    "optim.min_lr": 0.01,
    "optim.train_tokens": 26 * 4 * 128,  # 26 steps
}


def _run(smoke, tmp_path, name, **overrides):
    cfg = smoke.cfg(tmp_path, name, {**STEADY, **overrides})
    smoke.train(cfg)
    return cfg.run_dir


def _event_at(diag, step):
    """The attribution of the event whose loss departure is at `step` or one after it."""
    hits = [a for a in diag.attribution if step <= a.loss_step <= step + 1]
    assert hits, [(a.start_step, a.loss_step) for a in diag.attribution]
    return hits[0]


@pytest.mark.slow
def test_group_lr_times_100_names_that_group_first(smoke, tmp_path, capsys):
    run = _run(smoke, tmp_path, "lr", **{"intervention.plant": f"lr@{PLANT}:block1.mlp*100"})
    diag = diagnose(run)
    att = _event_at(diag, PLANT + 1)  # the update of step 20 shows in the loss of step 21
    assert att.verdict == "led"
    assert att.origin == "block1.mlp" and att.first_groups == ["block1.mlp"]
    groups = att.leaders[att.leaders["group"] != "all"]
    assert groups.iloc[0]["name"] == "update_rms/lr[block1.mlp]" and groups.iloc[0]["step"] == PLANT
    assert "It started in group block1.mlp" in " ".join(attribution_lines(att))
    assert diagnose_main([str(run), "-o", str(tmp_path / "diag")]) == 0
    out = capsys.readouterr().out
    assert "What moved first:" in out and "update_rms/lr[block1.mlp] at step 20, 1 step before" in out
    assert "## What moved first" in (tmp_path / "diag" / "report.md").read_text()
    assert (tmp_path / "diag" / f"first_moved_{att.event}.png").stat().st_size > 10_000
    section = attribution_section([load_run(run)], tmp_path)  # the same, in `gradvar report`
    assert "It started in group block1.mlp" in section and (tmp_path / f"first_moved_lr_{att.event}.png").exists()
    js = json.loads(json.dumps(diag.to_dict()))
    assert any(a["origin"] == "block1.mlp" for a in js["attribution"])


@pytest.mark.slow
def test_corrupted_batch_is_blamed_on_the_batch(smoke, tmp_path):
    # random tokens; one repeated token (batch@20:repeat) gives the same verdict, not repeated here for time
    run = _run(smoke, tmp_path, "random", **{"intervention.plant": f"batch@{PLANT}:random"})
    att = _event_at(diagnose(run), PLANT)
    assert att.loss_step == PLANT
    assert att.verdict == "batch" and att.held_out["at_level"]
    assert att.origin is None
    assert f"the batch of step {PLANT} was the cause" in attribution_lines(att)[0]


@pytest.mark.slow
def test_lr_warmup_spike_gets_no_invented_cause(smoke, tmp_path):
    # A slow linear warmup to a peak LR this model cannot train at: the loss spikes on the way up, with no
    # planted cause; the answer must say nothing led it (and that every series could have).
    run = _run(
        smoke,
        tmp_path,
        "warmup",
        seed=2,
        **{"optim.lr": 0.05, "optim.min_lr": 0.05, "optim.warmup_steps": 64, "optim.train_tokens": 36 * 4 * 128},
    )
    diag = diagnose(run)
    warm = [a for a in diag.attribution if a.lr.get("phase") == "warmup" and a.n_judged]
    assert warm, [(a.start_step, a.lr, a.n_judged) for a in diag.attribution]
    for att in warm:
        assert att.verdict == "none" and att.origin is None, att.moved.head()
        lines = attribution_lines(att)
        assert NO_LEAD in lines[0] and any("LR warmup" in ln for ln in lines)
