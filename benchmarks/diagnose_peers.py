"""`gradvar diagnose` beside the log doctors on PyPI (runmedic, trainspotter, losslint), on the public logs of
tests/data/real_logs whose class is written in its expected.json: classes right per tool, overall and per
format family.

    python benchmarks/diagnose_peers.py                   # gradvar and the peers (a throwaway venv under /tmp)
    python benchmarks/diagnose_peers.py --no-peers        # gradvar only
    python benchmarks/diagnose_peers.py --venv /tmp/peers # install into (or reuse) this venv, and keep it
    python benchmarks/diagnose_peers.py --per-log         # also each log's answers

Each tool reads each log as a user would run it (its CLI on the file, formats auto-detected) and one rule,
fixed in RULES before any score was looked at, maps its findings on the training loss to stable / spiky /
diverged. A file a tool cannot read, or a run that fails, is no answer and counts as wrong. A peer that cannot
be installed or run is skipped with one line. The family of a log is its "family" in expected.json when it
has one, else its file type.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_logs"
CLASSES = ("stable", "spiky", "diverged")
PEERS = ("runmedic", "trainspotter", "losslint")
TIMEOUT_S = 120
EVAL_HINTS = ("eval", "val", "test")

RULES = {
    "gradvar": "run_class of analysis.diagnose(path) (the class `gradvar diagnose` prints)",
    "runmedic": "`runmedic diagnose --json`: diverged if a non_finite or divergence finding is on a train-loss "
    "series (its roles.train_loss), else spiky if a loss_spikes finding is, else stable (any severity)",
    "trainspotter": "`trainspotter analyze --output json`: diverged if a divergence finding is on train/loss, "
    "else spiky if a spikes finding is, else stable (any severity)",
    "losslint": "`losslint check --format json`: diverged if a divergence finding, or a nan_inf finding on the "
    "train-loss series (`loss`, or a loss not named eval/val/test), else spiky if a loss_spike finding, else "
    "stable; a run with no points read is no answer",
}


# -- the logs and their expected classes ------------------------------------------------------------------------


def file_family(name: str) -> str:
    """A log's format family from its file type (used when expected.json names none)."""
    n = name.lower()
    if n.endswith("trainer_state.json"):
        return "HF trainer_state.json"
    if "tfevents" in n:
        return "TensorBoard"
    for ext, fam in ((".jsonl", "JSONL"), (".json", "JSON"), (".csv", "CSV"), (".tsv", "CSV")):
        if n.endswith(ext):
            return fam
    return "console text"


def expectations(data: Path = DATA) -> list[dict]:
    """[{name, path, class, family}] for every log in expected.json that exists, in name order."""
    exp = json.loads((data / "expected.json").read_text())
    out = []
    for name in sorted(exp):
        e = exp[name]
        if (data / name).exists() and e.get("class") in CLASSES:
            out.append(
                {"name": name, "path": data / name, "class": e["class"], "family": e.get("family") or file_family(name)}
            )
    return out


# -- the tools ------------------------------------------------------------------------------------------------


def gradvar_class(path: Path):
    """gradvar's class for a log, or None when it cannot read it."""
    import warnings

    from analysis import diagnose
    from analysis.logs import LogError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return diagnose(path).run_class
    except (LogError, ValueError, OSError):
        return None


def _is_train_loss(name: str) -> bool:
    n = name.lower()
    return n == "loss" or ("loss" in n and not any(h in n for h in EVAL_HINTS))


def runmedic_class(out: dict):
    runs = out if isinstance(out, list) else [out]
    if not runs:
        return None
    run = runs[0]
    train = set((run.get("roles") or {}).get("train_loss") or [])
    if not train:
        return None
    checks = {f.get("check") for f in run.get("findings", []) if f.get("metric") in train}
    if checks & {"non_finite", "divergence"}:
        return "diverged"
    return "spiky" if "loss_spikes" in checks else "stable"


def trainspotter_class(out: dict):
    if "train/loss" not in (out.get("run", {}).get("metrics") or {}):
        return None
    found = {f.get("detector") for f in out.get("findings", []) if f.get("metric") == "train/loss"}
    if "divergence" in found:
        return "diverged"
    return "spiky" if "spikes" in found else "stable"


def losslint_class(out: dict):
    runs = out.get("runs") or []
    if not runs or not runs[0].get("points"):
        return None
    finds = out.get("findings") or []
    nan_on_loss = any(
        f.get("check") == "nan_inf" and _is_train_loss(str((f.get("details") or {}).get("series", ""))) for f in finds
    )
    checks = {f.get("check") for f in finds}
    if "divergence" in checks or nan_on_loss:
        return "diverged"
    return "spiky" if "loss_spike" in checks else "stable"


COMMANDS = {
    "runmedic": (["diagnose", "--json"], runmedic_class),
    "trainspotter": (["analyze", "--output", "json", "--no-color"], trainspotter_class),
    "losslint": (["check", "--format", "json", "--color", "never"], losslint_class),
}


def peer_class(exe: Path, tool: str, path: Path):
    """The peer's class for a log under its rule, or None (it could not read the log, or failed)."""
    args, rule = COMMANDS[tool]
    try:
        r = subprocess.run([str(exe), *args, str(path)], capture_output=True, text=True, timeout=TIMEOUT_S)
        return rule(json.loads(r.stdout)) if r.stdout.strip() else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError, AttributeError, TypeError):
        return None


def install_peers(env_dir: Path, tools=PEERS) -> tuple[dict, list]:
    """({tool: console script}, [one line per skipped tool]) after installing each tool into env_dir."""
    ready, skipped = {}, []
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    if not (bin_dir / "python").exists():
        try:
            venv.EnvBuilder(with_pip=True, clear=False).create(env_dir)
        except Exception as exc:  # no ensurepip, no disk: every peer is skipped, gradvar still runs
            return {}, [f"{t}: skipped (cannot create a venv at {env_dir}: {exc})" for t in tools]
    for tool in tools:
        exe = bin_dir / tool
        if not exe.exists():
            r = subprocess.run(
                [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", tool],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0 or not exe.exists():
                why = (r.stderr.strip().splitlines() or ["no console script"])[-1]
                skipped.append(f"{tool}: skipped (pip install {tool} failed: {why})")
                continue
        probe = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
        if probe.returncode != 0:
            skipped.append(f"{tool}: skipped (`{tool} --version` exited {probe.returncode})")
            continue
        ready[tool] = exe
    return ready, skipped


def versions(ready: dict) -> dict:
    """{tool: installed version} from the venv's package metadata (what pip installed, not a module string)."""
    out = {}
    for tool, exe in ready.items():
        code = f"import importlib.metadata as m; print(m.version({tool!r}))"
        r = subprocess.run([str(exe.parent / "python"), "-c", code], capture_output=True, text=True)
        out[tool] = r.stdout.strip() or "?"
    return out


# -- scoring and the table ------------------------------------------------------------------------------------


def score(logs: list, answers: dict) -> dict:
    """{tool: {family: (right, total)}} with an 'all' family; answers[tool][name] is a class or None."""
    out = {}
    for tool, ans in answers.items():
        per: dict = {}
        for log in logs:
            ok = ans.get(log["name"]) == log["class"]
            for fam in (log["family"], "all"):
                r, n = per.get(fam, (0, 0))
                per[fam] = (r + ok, n + 1)
        out[tool] = per
    return out


def format_table(logs: list, scores: dict) -> str:
    """Families as rows (largest first, 'all' last), tools as columns: 'right/total'."""
    tools = list(scores)
    fams = sorted({log["family"] for log in logs}, key=lambda f: (-sum(lg["family"] == f for lg in logs), f))
    width = max([len("family")] + [len(f) for f in fams])
    cols = [max(len(t), 9) for t in tools]
    head = f"{'family':<{width}}  {'logs':>4}  " + "  ".join(f"{t:>{w}}" for t, w in zip(tools, cols))
    lines = [head, "-" * len(head)]
    for fam in fams + ["all"]:
        n = scores[tools[0]][fam][1] if tools else 0
        cells = []
        for t, w in zip(tools, cols):
            r, total = scores[t][fam]
            cell = f"{r}/{total}" + (f" {100 * r / total:.0f}%" if fam == "all" else "")
            cells.append(f"{cell:>{w}}")
        lines.append(f"{fam:<{width}}  {n:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def format_per_log(logs: list, answers: dict) -> str:
    tools = list(answers)
    width = max(len(log["name"]) for log in logs)
    lines = [f"{'log':<{width}}  {'expected':<9}  " + "  ".join(f"{t:<12}" for t in tools)]
    for log in logs:
        cells = []
        for t in tools:
            a = answers[t].get(log["name"])
            mark = "" if a == log["class"] else "*"
            cells.append(f"{(a or 'unread') + mark:<12}")
        lines.append(f"{log['name']:<{width}}  {log['class']:<9}  " + "  ".join(cells))
    return "\n".join(lines)


def run(logs: list, peers: dict) -> dict:
    """{tool: {log name: class or None}}: gradvar first, then each ready peer."""
    answers = {"gradvar": {log["name"]: gradvar_class(log["path"]) for log in logs}}
    for tool, exe in peers.items():
        answers[tool] = {log["name"]: peer_class(exe, tool, log["path"]) for log in logs}
    return answers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-peers", action="store_true", help="gradvar only (no venv, no install)")
    ap.add_argument("--venv", default=None, help="install the peers into (or reuse) this venv and keep it")
    ap.add_argument("--data", default=str(DATA), help="a folder with logs and expected.json")
    ap.add_argument("--per-log", action="store_true", help="also print each log's answers (* = wrong)")
    ap.add_argument("--json", default=None, help="write the answers and scores here")
    a = ap.parse_args(argv)
    logs = expectations(Path(a.data))
    if not logs:
        print(f"diagnose_peers: no logs with an expected class in {a.data}/expected.json", file=sys.stderr)
        return 2
    peers, skipped, tmp, vers = {}, [], None, {}
    if not a.no_peers:
        env = Path(a.venv) if a.venv else Path(tempfile.mkdtemp(prefix="gradvar-peers-", dir="/tmp"))
        tmp = None if a.venv else env
        try:
            peers, skipped = install_peers(env)
            vers = versions(peers)
            answers = run(logs, peers)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    else:
        answers = run(logs, {})
    scores = score(logs, answers)
    print(f"diagnose_peers: {len(logs)} public logs ({a.data}), classes right (stable / spiky / diverged)")
    for line in skipped:
        print(line)
    print(format_table(logs, scores))
    if vers:
        print("versions: " + ", ".join(f"{t} {v}" for t, v in vers.items()))
    print("rules:")
    for tool in answers:
        print(f"  {tool}: {RULES[tool]}")
    if a.per_log:
        print()
        print(format_per_log(logs, answers))
    if a.json:
        Path(a.json).write_text(json.dumps({"answers": answers, "scores": scores, "skipped": skipped}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
