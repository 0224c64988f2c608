"""The command line: `gradvar train --help` lists every config field with its default and doc line, every
command takes the same `--section.field VALUE` options, bad input is one line on stderr, and the help
commands start without importing torch."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time

import pytest

from gradvar.cli import main
from trainer.config import TrainConfig
from trainer.options import _shown, config_options

FIELDS = config_options()


def help_text(capsys, monkeypatch, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one option per line, whatever the terminal
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_config_field_has_a_doc_line():
    assert len(FIELDS) > 50
    assert [o.key for o in FIELDS if not o.doc] == []
    root = TrainConfig()
    for section in [root, *(v for v in vars(root).values() if dataclasses.is_dataclass(v))]:
        name = type(section).__name__
        assert not type(section).__doc__.startswith(name + "("), f"{name} needs a docstring (its --help heading)"


def test_train_help_lists_every_field_with_default_and_doc(capsys, monkeypatch):
    text = help_text(capsys, monkeypatch, "train")
    entries = re.split(r"\n(?=  --)|\n\n", text)  # one option per entry, its help possibly on the next line
    lines = {e.split()[0]: " ".join(e.split()) for e in entries if e.startswith("  --")}
    for opt in FIELDS:
        line = lines[f"--{opt.key}"]
        assert line.endswith(f"{opt.doc} (default {_shown(opt.default)})"), line
    assert lines["--optim.lr"].split()[1] == "FLOAT" and "--optim.micro-batch-size" not in lines  # listed once
    assert "(default 0.003)" in lines["--optim.lr"] and "(default false)" in lines["--slw.enabled"]


@pytest.mark.parametrize(
    "argv,key,expected",
    [
        (["--optim.lr", "0.1"], ("optim", "lr"), 0.1),
        (["--optim.lr=0.1"], ("optim", "lr"), 0.1),
        (["--optim.micro-batch-size", "1"], ("optim", "micro_batch_size"), 1),
        (["--optim.micro_batch_size=1"], ("optim", "micro_batch_size"), 1),
        (["--log-every", "3"], ("log_every",), 3),
        (["--slw.enabled"], ("slw", "enabled"), True),
        (["--slw.enabled", "false"], ("slw", "enabled"), False),
        (["--slw.difficulties", "[8, 64]"], ("slw", "difficulties"), [8, 64]),
        (["--name", "x", "--name", "y"], ("name",), "y"),  # the last one wins, as in any CLI
    ],
)
def test_train_option_syntaxes(capsys, argv, key, expected):
    assert main(["train", "--preset", "smoke", "--print-config", *argv]) == 0
    value = json.loads(capsys.readouterr().out)
    for part in key:
        value = value[part]
    assert value == expected and type(value) is type(expected)


def one_line_error(capsys, argv, code=2) -> str:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "command",
    [["train", "--print-config"], ["study", "--preset", "smoke", "--list"], ["tune-slw", "--preset", "smoke"]],
)
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--optim.lr", "fast"], "error: optim.lr: cannot read 'fast' as float"),
        (["--optim.batch_size", "2.5"], "error: optim.batch_size: cannot read '2.5' as int"),
        (["--slw.enabled", "maybe"], "error: slw.enabled: cannot read 'maybe' as bool"),
        (["--slw.difficulties", "[8,"], "error: slw.difficulties: cannot read '[8,' as list"),
        (["--optim.lrr", "1"], "error: unrecognized arguments: --optim.lrr 1; did you mean --optim.lr?"),
        (["--optim.lr"], "error: argument --optim.lr: expected one argument"),
    ],
)
def test_bad_values_are_one_line_errors(capsys, command, argv, message):
    err = one_line_error(capsys, [*command, *argv])
    assert err.startswith(f"gradvar {command[0]}: {message}"), err


def test_study_sets_config_options_in_every_run(capsys, tmp_path):
    assert (
        main(
            [
                "study",
                "--preset",
                "smoke",
                "--runs-dir",
                str(tmp_path),
                "--list",
                "--data.cache-dir",
                "/tmp/c",
                "--optim.lr=0.02",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and all("--data.cache_dir /tmp/c" in x and "--optim.lr 0.02" in x for x in lines)
    runs = json.loads((tmp_path / "study.json").read_text())["runs"]
    assert [r["overrides"]["optim.lr"] for r in runs] == ["0.02"] * 11
    # the study sets these per run, so they are not its options
    assert "unrecognized arguments: --seed" in one_line_error(capsys, ["study", "--seed", "3", "--list"])
    assert "unrecognized arguments: --override" in one_line_error(capsys, ["study", "--override", "seed=1"])


def test_unknown_study_preset_is_a_clear_error(capsys):
    assert "unknown study preset 'nope'" in one_line_error(capsys, ["study", "--preset", "nope"])


TORCH = ("torch", "transformers", "tokenizers")
HEAVY = (*TORCH, "matplotlib", "scipy", "pandas", "analysis")
PROBE = """
import sys, time
t = time.perf_counter()
from gradvar.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(repr((time.perf_counter() - t, sorted(m for m in {heavy!r} if m in sys.modules))), file=sys.stderr)
"""


def started(*argv: str, heavy=HEAVY) -> tuple[float, list[str], str]:
    """Run `gradvar ARGV` in a fresh interpreter: (seconds from import to exit, heavy modules imported, stdout)."""
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy), *argv], capture_output=True, text=True, timeout=120
    )
    seconds, imported = eval(res.stderr.strip().splitlines()[-1])
    return seconds, imported, res.stdout


@pytest.mark.parametrize("command", ["train", "study", "tune-slw"])
def test_trainer_help_is_fast_and_loads_only_its_command(command):
    seconds, imported, out = started(command, "--help")
    assert f"usage: gradvar {command}" in out
    assert imported == [] and seconds < 1.0, (imported, seconds)


@pytest.mark.parametrize("command", [(), ("diagnose",), ("report",)])
def test_help_is_fast_and_needs_no_torch_pandas_or_matplotlib(command):
    t = time.perf_counter()
    seconds, imported, out = started(*command, "--help", heavy=(*TORCH, "matplotlib", "scipy", "pandas"))
    wall = time.perf_counter() - t  # the whole process, the interpreter's start included
    assert "usage: gradvar" in out and imported == [] and wall < 1.5, (imported, seconds, wall)


def test_diagnose_needs_no_torch(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n" + "".join(f"{s},{3 - s / 100 + (2.0 if s == 60 else 0)}\n" for s in range(1, 121)))
    _, imported, out = started("diagnose", str(log), heavy=TORCH)
    assert imported == [] and re.search(r"spike", out, re.I), out


def test_python_m_study_takes_the_same_arguments(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "study",
            "--preset",
            "smoke",
            "--runs-dir",
            str(tmp_path),
            "--list",
            "--optim.lr",
            "0.02",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    from study.presets import smoke

    assert [line.split()[0] for line in res.stdout.splitlines()] == [s.name for s in smoke().runs]
    assert "--optim.lr 0.02" in res.stdout
