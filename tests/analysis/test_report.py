"""write_report on two synthetic run directories (baseline + SLW) and the `gradvar report` entry point."""

import argparse
import json
import re

import numpy as np
import pytest

from analysis.cli import add_report_arguments
from analysis.report.report import main_report, write_report
from gradvar.records import RecordWriter

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>|x"


def write_run(root, dirname, name, method, seed=0, n=240, spikes=(90,)):
    """A small run as the trainer writes it: steps, layers, probes, evals, events and config.json."""
    rng = np.random.default_rng(seed)
    d = root / dirname
    w = RecordWriter(d)
    slw = method == "slw"
    tokens = 0
    for s in range(1, n + 1):
        seqlen = min(64, 8 + 8 * (s // 20)) if slw else 64
        tokens += 4 * seqlen
        loss = 3 + 3 * np.exp(-s / 60) + 0.01 * rng.standard_normal() + (1.5 if s in spikes else 0.0)
        v = 1e-4 * (1 + 0.1 * rng.random()) * (20 if s + 2 in spikes else 1)
        key = {"step": s, "tokens": tokens, "seqlen": seqlen}
        w.append(
            "steps",
            key
            | {
                "batch_size": 4,
                "lr": 1e-3,
                "loss": loss,
                "adam_v_max": v,
                "adam_v_l1": v * 50,
                "grad_norm": np.sqrt(v) * 10,
                "update_rms": 1e-3,
                "time_s": 0.1,
                "probe_loss": loss + 0.1 if s % 5 == 0 else np.nan,
            },
        )
        w.append(
            "layers",
            [key | {"group": g, "stat": "adam_v_max", "value": v * (i + 1)} for i, g in enumerate(("wte", "h.0.attn"))],
        )
        if s % 10 == 0:
            w.append(
                "probes",
                [
                    key
                    | {
                        "probe_seqlen": L,
                        "loss": loss + 32 / L,
                        "grad_trace_sigma": 1.0 / L,
                        "grad_trace_sigma_per_token": 0.01 * L,
                        "grad_sq_max": v * L,
                        "grad_sq_max_micro": 2 * v * L,
                    }
                    for L in (16, 32, 64)
                ],
            )
        if s % 40 == 0:
            w.append("evals", key | {"val_loss": loss + 0.2, "val_ppl": float(np.exp(loss + 0.2)), "time_s": s * 0.1})
    w.append("events", {"step": spikes[0], "tokens": 0, "seqlen": 64, "kind": "spike", "value": 1.5, "message": "x"})
    w.close()
    cfg = {
        "name": name,
        "seed": seed,
        "model": {"n_positions": 64},
        "optim": {"lr": 1e-3, "batch_size": 4, "seq_len": 64} | ({"warmup_steps": 10} if slw else {}),
        "slw": {"enabled": slw, "min_seqlen": 8, "total_steps": 120, "difficulty_step": 8, "schedule": "fixed"},
        "meta": {
            "method": method,
            "versions": {"torch": "2.13.0", "numpy": "2.4"},
            "world_size": 1,
            "git_commit": "0123456789abcdef",
            "machine": "test-box",
            "command": f"gradvar train --preset tiny --seed {seed}",
        },
    }
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = [write_run(root, "base", EVIL, "baseline", spikes=(90, 150)), write_run(root, "slw", "slw-0", "slw")]
    out = root / "report"
    path = write_report(dirs, out, title="Test report", extra_sections=["## Study notes\n\nExtra text here."])
    return path, out


def test_report_md_has_findings_tables_and_valid_figures(report):
    path, out = report
    md = path.read_text()
    head = "\n".join(md.splitlines()[:20])
    assert "## Summary" in head and "**What was run:** 2 runs" in head and "Spike events" in head
    for table_head in ("| run | method | seed | batch_size |", "| rank | signal | transform |", "| method | n_runs |"):
        assert table_head in md
    assert "gradvar train --preset tiny --seed 0" in md and "test-box" in md and "2.13.0" in md
    assert "## Study notes" in md and "Extra text here." in md
    # the seqlen windows: the slw run's early window from its warmup, the baseline's (no warmup) by the fallback
    assert "steps <= 3 x warmup = 30" in md and "first 25% of steps (warmup unknown)" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"val_loss.png", "stability_grid.png", "seqlen_heatmap.png", "adam_variance.png", "lags.png"} <= set(images)
    for name in images:
        assert (out / name).read_bytes()[:8] == PNG, name


def test_report_names_escaped(report):
    path, out = report
    md = path.read_text()
    assert "\\|x" in md  # a pipe in a name cannot break a markdown table
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("data:image/png;base64,") >= 5 and 'src="val_loss.png"' not in html


def test_main_report_rejects_a_non_run_dir(tmp_path, capsys):
    parser = add_report_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path), "-o", str(tmp_path / "out")])
    assert main_report(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run directory" in err and "Traceback" not in err


def test_main_report_writes(report, tmp_path, capsys):
    runs = report[0].parent.parent
    args = add_report_arguments(argparse.ArgumentParser()).parse_args(
        [str(runs / "slw"), "-o", str(tmp_path / "r"), "--title", "One run"]
    )
    assert main_report(args) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.startswith("# One run") and "## Summary" in md and "**What was run:** 1 run" in md
    assert "report.md" in capsys.readouterr().out


def test_report_survives_empty_and_diverged_runs_without_config(tmp_path):
    (tmp_path / "empty" / "records").mkdir(parents=True)
    w = RecordWriter(tmp_path / "nan")
    for s in range(1, 80):
        w.append("steps", {"step": s, "tokens": s * 10, "seqlen": 16, "loss": 5 - s / 100 if s < 60 else np.nan})
    w.close()
    md = write_report([tmp_path / "empty", tmp_path / "nan"], tmp_path / "rep", n_boot=50).read_text()
    assert "| nan | baseline | – | 1 |" in md and "diverged" in md
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / "rep" / name).read_bytes()[:8] == PNG
