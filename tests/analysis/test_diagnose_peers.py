"""benchmarks/diagnose_peers.py without the peers: gradvar's answers on real logs, the scoring, the table, and
each peer's stated rule applied to findings shaped as that tool prints them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import diagnose_peers as bench  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"
PICK = {  # a short spiky, a short diverged and a 5-entry stable log (seconds to diagnose)
    "deeplab_issue5_checkpoint_spike.txt": "pasted console",
    "mlx_lora_issue620.txt": None,
    "llmc_readme_stdout.txt": None,
}


def _data(tmp_path: Path) -> Path:
    exp = json.loads((DATA / "expected.json").read_text())
    out = {}
    for name, fam in PICK.items():
        shutil.copy(DATA / name, tmp_path / name)
        entry = {k: v for k, v in exp[name].items() if k != "family"}
        out[name] = dict(entry, **({"family": fam} if fam else {}))
    (tmp_path / "notes.txt").write_text("We trained for a while and then it went badly.\nNo numbers here.\n")
    out["notes.txt"] = {"kind": "fine_tune", "class": "stable", "events": []}  # unreadable: no answer, wrong
    out["gone.csv"] = {"kind": "fine_tune", "class": "stable", "events": []}  # listed, not on disk: left out
    (tmp_path / "expected.json").write_text(json.dumps(out))
    return tmp_path


def test_gradvar_part_scores_and_prints_the_table(tmp_path, capsys):
    data = _data(tmp_path)
    logs = bench.expectations(data)
    assert [lg["name"] for lg in logs] == sorted(list(PICK) + ["notes.txt"])
    fam = {lg["name"]: lg["family"] for lg in logs}
    assert fam["deeplab_issue5_checkpoint_spike.txt"] == "pasted console"  # expected.json's family wins
    assert fam["mlx_lora_issue620.txt"] == "console text"  # else the file type

    assert bench.main(["--no-peers", "--data", str(data), "--per-log", "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    rows = {ln.split("  ")[0].strip(): ln.split() for ln in text.splitlines()}
    assert rows["all"][1:] == ["4", "3/4", "75%"]  # the prose file is no answer
    assert rows["console text"][-1] == "2/3" and rows["pasted console"][-1] == "1/1"
    assert "notes.txt" in text and "unread*" in text and "gradvar: run_class of analysis.diagnose" in text
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["answers"]["gradvar"]["mlx_lora_issue620.txt"] == "diverged"
    assert saved["scores"]["gradvar"]["all"] == [3, 4]


def test_table_lists_families_largest_first_and_every_tool():
    logs = [
        {"name": "a", "class": "stable", "family": "CSV"},
        {"name": "b", "class": "spiky", "family": "console text"},
        {"name": "c", "class": "diverged", "family": "console text"},
    ]
    answers = {"gradvar": {"a": "stable", "b": "spiky", "c": "diverged"}, "runmedic": {"a": "stable", "b": None}}
    table = bench.format_table(logs, bench.score(logs, answers)).splitlines()
    assert table[0].split() == ["family", "logs", "gradvar", "runmedic"]
    assert [ln.split()[0] for ln in table[2:]] == ["console", "CSV", "all"]
    assert table[-1].split() == ["all", "3", "3/3", "100%", "1/3", "33%"]


def test_file_family_from_the_name():
    assert bench.file_family("x__trainer_state.json") == "HF trainer_state.json"
    assert bench.file_family("trainer_log.jsonl") == "JSONL"
    assert bench.file_family("metrics.csv") == "CSV"
    assert bench.file_family("events.out.tfevents.1.host") == "TensorBoard"
    assert bench.file_family("train.log") == "console text"


def test_peer_rules_map_findings_on_the_training_loss_only():
    rm = {"roles": {"train_loss": ["loss"]}, "findings": [{"check": "non_finite", "metric": "grad_norm"}]}
    assert bench.runmedic_class([rm]) == "stable"  # a NaN gradient norm (a skipped fp16 step) is no divergence
    rm["findings"].append({"check": "loss_spikes", "metric": "loss"})
    assert bench.runmedic_class([rm]) == "spiky"
    rm["findings"].append({"check": "divergence", "metric": "loss"})
    assert bench.runmedic_class([rm]) == "diverged"
    assert bench.runmedic_class([{"roles": {}, "findings": []}]) is None

    ts = {"run": {"metrics": {"train/loss": {}}}, "findings": [{"detector": "spikes", "metric": "eval/loss"}]}
    assert bench.trainspotter_class(ts) == "stable"
    ts["findings"].append({"detector": "spikes", "metric": "train/loss"})
    assert bench.trainspotter_class(ts) == "spiky"
    assert bench.trainspotter_class({"run": {"metrics": {}}, "findings": []}) is None

    ll = {"runs": [{"points": 10}], "findings": [{"check": "nan_inf", "details": {"series": "eval_loss"}}]}
    assert bench.losslint_class(ll) == "stable"
    ll["findings"].append({"check": "nan_inf", "details": {"series": "loss"}})
    assert bench.losslint_class(ll) == "diverged"
    assert bench.losslint_class({"runs": [{"points": 0}], "findings": []}) is None
