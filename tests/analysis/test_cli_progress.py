"""On a terminal, `gradvar diagnose` and `gradvar report` say on stderr what they are doing; in a pipe they
print nothing extra (stdout stays the command's output)."""

import os
import pty
import select
import sys
from pathlib import Path

from gradvar.cli import main

LOG = Path(__file__).resolve().parents[1] / "data" / "real_logs" / "AriesChen-UPC__GeoLLM__trainer_state.json"


def _on_a_terminal(monkeypatch, argv) -> str:
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", term)
    assert main(argv) == 0
    term.flush()
    text = ""
    while select.select([master], [], [], 1.0)[0]:  # a pty hands lines over one by one: read until it is quiet
        text += os.read(master, 65536).decode()
    term.close()
    os.close(master)
    return text


def test_diagnose_says_what_it_does_on_a_terminal(monkeypatch, capsys):
    said = _on_a_terminal(monkeypatch, ["diagnose", str(LOG)])
    assert f"gradvar diagnose: reading {LOG}, finding spikes" in said
    assert "gradvar diagnose: done in" in said
    assert "finding spikes" not in capsys.readouterr().out  # the command's output is untouched


def test_diagnose_in_a_pipe_prints_nothing_extra(capsys):
    assert main(["diagnose", str(LOG)]) == 0
    assert capsys.readouterr().err == ""
