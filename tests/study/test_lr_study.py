"""`gradvar study --preset smoke-lr` end to end: the LR-grid layout, claims and rules before any result,
verdicts that follow from the runs' own tables, the figures, and report.html rendered from report.md."""

import json
import re

import pytest

from analysis.records.load import load_runs
from analysis.report.md_html import render_file
from gradvar.cli import main
from study.report import lr_rules
from study.report.study_report import relabel, write_study_report
from study.stats.lr_grid import arm_outcomes, grid_rows, noise_margin

PNG = b"\x89PNG\r\n\x1a\n"
ORDER = (
    "## Findings",
    "## Decision rules (fixed before the runs)",
    "## Figures",
    "## Tables",
    "## The paper's numbers",
    "## How this was run",
    "## Appendix: the full gradvar report of the primary pair",
)


def _claim_rows(md: str) -> dict:
    table = md.split("## Findings")[1].split("## Decision rules")[0]
    rows = [ln.split(" | ") for ln in table.splitlines() if ln.startswith("| C")]
    return {r[0].strip("| ").split()[0]: r[2].split(":")[0] for r in rows}


@pytest.mark.slow
def test_smoke_lr_study_layout(tmp_path, data_cache):
    runs, rep = tmp_path / "runs", tmp_path / "report"
    args = ["study", "--preset", "smoke-lr", "--runs-dir", str(runs), "-o", str(rep)]
    assert main([*args, "--data.cache_dir", str(data_cache)]) == 0
    md = (rep / "report.md").read_text()
    at = [md.index(h) for h in ORDER]
    assert at == sorted(at), "findings, then rules, then results"
    assert "### Seed-paired differences" in md and md.index("![") > md.index("## Decision rules")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert images == ["lr_final_loss.png", "lr_paired_effects.png", "lr_spike_window.png"]
    for name in images:
        assert (rep / name).read_bytes()[:8] == PNG
    assert not list(rep.glob("loss_*.png")) and (rep / "primary" / "report.md").exists()
    assert "with n = 2 the bar is the range of the two seeds, not a confidence interval" in md

    # the verdicts in the table are the rules applied to the runs' own rows
    loaded = load_runs(sorted(p for p in runs.iterdir() if (p / "summary.json").exists()))
    relabel(loaded, json.loads((runs / "study.json").read_text()))
    rows = grid_rows(loaded)
    assert sorted(rows["arm"].unique()) == ["baseline", "batch-warmup", "slw"] and rows["lr"].nunique() == 2
    claims, _ = lr_rules.evaluate(rows, arm_outcomes(rows), noise_margin(rows)[0], n_boot=2000)
    assert _claim_rows(md) == {c.claim.split()[0]: c.verdict for c in claims}
    assert _claim_rows(md)["C4"] == "not tested"  # smoke-lr has no warmup20 arm

    html = (rep / "report.html").read_text()
    assert html == render_file(rep / "report.md").read_text()

    extra = {"claim": "C6 causal length test", "rule": "R6", "measured": "x", "verdict": "refuted", "why": "w"}
    write_study_report(runs, tmp_path / "with_c6", extra_claims=[extra])
    md6 = (tmp_path / "with_c6" / "report.md").read_text()
    assert _claim_rows(md6)["C6"] == "refuted" and "- **C6 causal length test**: R6" in md6
