"""The W&B sink in offline mode (no network): the run's history, read back from wandb's own .wandb
transaction log, holds every steps column at its optimizer step with the Parquet values; events are alerts;
the user's own run keeps its step counter; a finished run is a failing sink that training survives."""

import math

import numpy as np
import pytest
import wandb
from dashboard_files import wandb_alerts, wandb_history
from sink_helpers import LOSS_SPIKE_STEP, STEPS, train

import gradvar
from gradvar.sinks import WandbSink


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    if wandb.run is not None:
        wandb.finish()


def _run_file(tmp_path):
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    return path


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_wandb_history_holds_every_steps_column(tmp_path):
    train(tmp_path / "run", sinks=[WandbSink(project="gradvar-test", dir=str(tmp_path))])
    steps = gradvar.read_records(tmp_path / "run")["steps"]
    rows = [r for r in wandb_history(_run_file(tmp_path)) if "gradvar/step" in r]
    assert [r["gradvar/step"] for r in rows] == list(range(1, STEPS + 1))
    for r, rec in zip(rows, steps.to_dict("records")):
        for col, want in rec.items():
            if col != "step":
                assert _same(float(r[f"gradvar/{col}"]), float(want)), (col, rec["step"])
    layers = gradvar.read_records(tmp_path / "run")["layers"]
    by_step = {r["gradvar/step"]: r for r in rows}
    for x in layers.itertuples():
        assert _same(by_step[x.step][f"gradvar/layers/{x.group}/{x.stat}"], float(x.value))
    alerts = dict(wandb_alerts(_run_file(tmp_path)))
    spike = alerts[f"gradvar spike at step {LOSS_SPIKE_STEP}"]
    events = gradvar.read_records(tmp_path / "run")["events"]
    assert spike == events[events["kind"] == "spike"]["message"].iloc[0]
    assert not any("checkpoint" in t for t in alerts)  # routine events stay quiet


def test_users_run_keeps_its_own_step(tmp_path):
    run = wandb.init(project="gradvar-test", dir=str(tmp_path))
    run.log({"mine": 1.0})
    train(tmp_path / "run", sinks=[WandbSink(run=wandb.run)], steps=3)
    run.log({"mine": 2.0})
    assert wandb.run is run  # not finished by the sink
    run.finish()
    hist = wandb_history(_run_file(tmp_path))
    mine = [r["_step"] for r in hist if "mine" in r]
    assert mine[1] == mine[0] + 4  # gradvar's 3 rows advance the counter, never rewind it
    assert [r["gradvar/step"] for r in hist if "gradvar/step" in r] == [1, 2, 3]


def test_finished_run_is_dropped_and_records_are_complete(tmp_path):
    run = wandb.init(project="gradvar-test", dir=str(tmp_path))
    run.finish()  # a closed run: every log call now raises
    with pytest.warns(UserWarning, match="sink WandbSink failed"):
        mon = train(tmp_path / "run", sinks=[WandbSink(run=run)])
    assert not mon.sinks
    steps = gradvar.read_records(tmp_path / "run")["steps"]
    assert steps["step"].tolist() == list(range(1, STEPS + 1))
    assert np.isfinite(steps["adam_v_max"]).all()
