"""Reading a run that is still training: another process flushes every step (merging parts every 16
flushes) while this one reads; every read holds every step flushed so far, exactly once, with no warning,
and `gradvar report` runs on the live run."""

import subprocess
import sys
import textwrap
import warnings

import pytest

import gradvar

WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from gv_helpers import tiny_gpt2
    import gradvar
    torch.set_num_threads(1)
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, sys.argv[1], "paper", flush_every=1, notify=lambda *a: None)
    g = torch.Generator().manual_seed(0)
    for step in range(int(sys.argv[3])):
        for _ in range(2):
            x = torch.randint(0, 64, (2, 16), generator=g)
            (model(input_ids=x, labels=x).loss / 2).backward()
        opt.step(); mon.step(); opt.zero_grad()
        if step == 0:
            print("first flush", flush=True)
    mon.close()
""")


@pytest.mark.slow  # a writer process for a few hundred steps (about 20 s)
def test_reads_while_another_process_flushes(tmp_path):
    from pathlib import Path

    from analysis.report.report import write_report

    run, n_steps = tmp_path / "live", 300
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run), str(Path(__file__).parent), str(n_steps)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "first flush"
    seen, reported = [], False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while proc.poll() is None:
            tables = gradvar.read_records(run, ["layers", "steps"])  # in this order: layers never ahead
            steps = tables["steps"]["step"].tolist()
            assert steps == list(range(1, len(steps) + 1))  # every flushed step, once, none missing
            layers = tables["layers"]
            assert set(layers["step"]) <= set(steps) and len(layers) % max(layers["step"].nunique(), 1) == 0
            seen.append(len(steps))
            if not reported and len(steps) > 40:
                write_report([run], tmp_path / "report", n_boot=20)
                reported = True
    assert proc.wait() == 0
    assert not [w for w in caught if "records" in str(w.message)], [str(w.message) for w in caught]
    assert reported and len(seen) > 5 and min(seen) < n_steps  # read many times, mid-run
    assert (tmp_path / "report" / "report.md").exists()
    assert len(gradvar.read_records(run)["steps"]) == n_steps
