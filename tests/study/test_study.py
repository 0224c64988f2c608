"""`gradvar study --preset smoke` end to end: the batch-axis design on the smoke model, the report with its rules
and verdicts (equal to the rules applied to the tables read back), figures that are real PNGs, a rerun that
starts nothing, and the one-seed layout that prints no verdict."""

import json
import os
import re

import pytest

from study.cli import main
from study.report.layout import write_study_report
from study.report.tables import load_study
from study.stats import rules as R

PNG = b"\x89PNG\r\n\x1a\n"


def images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path, data_cache, capsys):
    runs, rep = tmp_path / "runs", tmp_path / "report"
    args = ["--preset", "smoke", "--runs-dir", str(runs), "-o", str(rep), "--data.cache_dir", str(data_cache)]
    assert main(args) == 0
    md = (rep / "report.md").read_text()
    manifest = json.loads((runs / "study.json").read_text())
    assert len(manifest["runs"]) == 11 and all((runs / r["name"] / "summary.json").exists() for r in manifest["runs"])

    t = load_study(runs)
    assert t.n_seeds == 2 and t.window == (1, 8)  # 2 x the 6-step warmup, cut at the runs' 8 steps
    assert 0 < t.ref["bigram"] < t.ref["unigram"] < t.ref["ln_vocab"]
    for col in ("grad_trace_sigma", "grad_noise_scale", "grad_true_sq"):  # K = 2: the noise columns are recorded
        assert t.steps[col].notna().any(), col
    assert {2, 4} <= set(t.probes["step"]) and set(t.probes["arm"]) == {"baseline"}  # the probe also runs at step 1
    verdicts = R.evaluate(t.outcomes, t.probes, t.window[1], t.ref["measurable"])
    for key in ("D1", "D2", "D3", "D4", "S"):  # the report prints what the rules give on the tables read back
        assert f"| {key} | {verdicts[key].verdict} |" in md, key
        assert R.RULES[key] in md
    assert md.index("## What we found") < md.index("## Design") < md.index("## Verdicts")
    assert "Findings in plain words go here" in md  # the lead slot, filled by --lead
    assert f"unigram (add-one) cross-entropy **{t.ref['unigram']:.3f}**" in md
    names = images(md)
    assert {"dilemma.png", "final_loss_vs_lr.png", "early_window.png", "noise.png", "length_probe.png"} <= set(names)
    for name in names:
        assert (rep / name).read_bytes()[:8] == PNG, name
    assert "data:image/png;base64," in (rep / "report.html").read_text()

    # a rerun starts no run; --lead puts the findings first
    stamps = {p: p.stat().st_mtime for p in runs.glob("*/summary.json")}
    lead = tmp_path / "lead.md"
    lead.write_text("The smoke model shows nothing: it is a test.\n")
    assert main([*args, "--lead", str(lead)]) == 0
    assert {p: p.stat().st_mtime for p in runs.glob("*/summary.json")} == stamps
    md = (rep / "report.md").read_text()
    assert "The smoke model shows nothing" in md and "Findings in plain words go here" not in md

    # one seed per cell: a demonstration, no verdict
    one = tmp_path / "one"
    one.mkdir()
    keep = [r for r in manifest["runs"] if r["overrides"]["seed"] == 0]
    for r in keep:
        os.symlink(runs / r["name"], one / r["name"])
    (one / "study.json").write_text(json.dumps({**manifest, "runs": keep}))
    md = write_study_report(one, tmp_path / "one-report", ref=dict(t.ref)).read_text()
    assert "n = 1: no verdict" in md and "| D1 |" not in md and "supported" not in md
    assert images(md) == ["probe_ratio.png"]


def test_report_only_starts_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["--preset", "smoke", "--runs-dir", str(runs), "--report-only", "-o", str(tmp_path / "r")]) == 1
    assert "no run finished" in capsys.readouterr().err
    assert [p.name for p in runs.iterdir()] == ["study.json"]  # the manifest only: no run directory was made
