"""`gradvar study` end to end on the smoke grid: two tiny runs, the report written, a rerun skips them."""

import json
import re

import pytest

from gradvar.cli import main
from study.report.causal_section import causal_section
from study.report.study_report import write_study_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_study_writes_report_and_resumes(tmp_path, data_cache, capsys):
    runs, rep = tmp_path / "runs", tmp_path / "report"
    args = ["study", "--preset", "smoke", "--runs-dir", str(runs), "-o", str(rep), "--data.cache_dir", str(data_cache)]
    assert main(args) == 0
    md = (rep / "report.md").read_text()
    assert "## Study findings" in md and "### The paper's claims beside this study" in md
    assert "| method |" in md and "baseline" in md and "slw" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(images) >= 5
    for name in images:
        assert (rep / name).read_bytes()[:8] == PNG, name
    html = (rep / "report.html").read_text()
    assert "data:image/png;base64," in html
    manifest = json.loads((runs / "study.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["base-s0", "slw-s0"]
    # the causal branches: four arms from the baseline's step-4 checkpoint, trained, the source untouched
    arms = {b["arm"]: runs / b["dir"] for b in manifest["branches"]}
    assert sorted(arms) == sorted(["short-low", "full-low", "short-high", "full-high"])
    assert all((d / "summary.json").exists() for d in arms.values())
    assert (runs / "base-s0" / "checkpoints" / "step-000000004.pt").exists()  # pinned, never pruned
    lines, claim = causal_section(runs, tmp_path)
    assert claim["verdict"] == "inconclusive" and "1 blocks" in claim["why"]  # one block: the rule needs 4
    assert any("### Paired effects" in line for line in lines) and (tmp_path / "causal_2x2.png").exists()
    stamp = {p: p.stat().st_mtime for p in runs.glob("*/summary.json")}
    capsys.readouterr()
    lead = tmp_path / "lead.md"
    lead.write_text("## What we found\n\nWritten after reading the report.\n")
    assert main([*args, "--lead", str(lead)]) == 0  # a finished study: only the report is rewritten
    out = capsys.readouterr().out
    assert "2 already complete, 0 to run" in out and "4 already complete, 0 to run" in out
    assert {p: p.stat().st_mtime for p in runs.glob("*/summary.json")} == stamp
    md = (rep / "report.md").read_text()
    assert md.index("Written after reading the report.") < md.index("## Study findings")

    # an LR sweep gets one row per (batch, LR), its classes counted over seeds
    for r in manifest["runs"]:
        r["role"] = "sweep"
    (runs / "study.json").write_text(json.dumps(manifest))
    write_study_report(runs, tmp_path / "sweep")
    md = (tmp_path / "sweep" / "report.md").read_text()
    section = md.split("### LR sweep (baseline, larger batch)")[1].split("###")[0]
    rows = [line for line in section.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 1 and rows[0].startswith("| 4 | 0.05 | 2 |") and "/2" in rows[0]
    assert re.search(r"LR sweep \(baseline, larger batch\):\*\* LR 0.05: \w+ \d/2", md)
