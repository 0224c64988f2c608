"""The TensorBoard sink against the records: every number read back by tensorboard's own reader equals the
Parquet value; events as text; a failing sink is dropped without touching training or the records; under
2-rank DDP only rank 0 writes."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dashboard_files import tensorboard_scalar_events, tensorboard_scalars, tensorboard_texts
from gv_helpers import tiny_gpt2
from sink_helpers import LOSS_SPIKE_STEP, STEPS, train

import gradvar
from gradvar.schema import STEPS as STEPS_CONTRACT
from gradvar.sinks import TensorBoardSink


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_tensorboard_holds_every_record_exactly(tmp_path):
    train(tmp_path / "run", sinks=[TensorBoardSink(tmp_path / "tb")])
    tables = gradvar.read_records(tmp_path / "run")
    tb = tensorboard_scalars(tmp_path / "tb")
    steps = tables["steps"]
    assert len(steps) == STEPS
    assert set(STEPS_CONTRACT) <= set(steps.columns)
    for col in steps.columns.drop("step"):  # every column, NaN ones too, at its optimizer step
        got = tb[f"gradvar/{col}"]
        assert sorted(got) == steps["step"].tolist(), col
        for step, want in zip(steps["step"], steps[col].astype(float)):
            assert _same(got[step], want), (col, step, got[step], want)
    assert tb["gradvar/grad_trace_sigma"][3] > 0  # K=2: a real number, not only NaN
    layers = tables["layers"]
    assert len(layers) > 0
    for r in layers.itertuples():
        assert _same(tb[f"gradvar/layers/{r.group}/{r.stat}"][r.step], float(r.value))
    probes = tables["probes"]
    assert sorted(probes["probe_seqlen"].unique()) == [9, 17]
    for r in probes.to_dict("records"):
        for col in ("loss", "grad_trace_sigma", "grad_noise_scale", "grad_sq_max", "grad_sq_max_micro"):
            assert _same(tb[f"gradvar/probe/{int(r['probe_seqlen'])}/{col}"][r["step"]], float(r[col]))
    n_tb = sum(len(v) for k, v in tb.items())
    n_rec = steps.shape[0] * (steps.shape[1] - 1) + len(layers) + len(probes) * (probes.shape[1] - 4)
    assert n_tb == n_rec  # nothing more, nothing twice


def test_tensorboard_one_event_per_step(tmp_path):
    """A step's scalars travel in one event (the writer's thread checksums and writes each event; an event per
    value would make the training thread wait on it for every value)."""
    train(tmp_path / "run", sinks=[TensorBoardSink(tmp_path / "tb")])
    events = tensorboard_scalar_events(tmp_path / "tb")
    steps = [s for s, _ in events]
    assert steps == sorted(set(steps)) == list(range(1, STEPS + 1))
    tb = tensorboard_scalars(tmp_path / "tb")
    assert sum(n for _, n in events) == sum(len(v) for v in tb.values())


def test_tensorboard_events_as_text(tmp_path):
    train(tmp_path / "run", sinks=[TensorBoardSink(tmp_path / "tb")])
    texts = tensorboard_texts(tmp_path / "tb")
    events = gradvar.read_records(tmp_path / "run")["events"]
    assert {"spike", "checkpoint"} <= set(events["kind"])
    for r in events.itertuples():
        assert texts[f"gradvar/events/{r.kind}"][r.step] == r.message
    assert LOSS_SPIKE_STEP in texts["gradvar/events/spike"]


def test_users_writer_is_flushed_not_closed(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "tb")
    train(tmp_path / "run", sinks=[TensorBoardSink(writer=writer)], steps=3)
    writer.add_scalar("mine/after", 1.0, 4)  # still open after the monitor closed
    writer.close()
    tb = tensorboard_scalars(tmp_path / "tb")
    assert sorted(tb["gradvar/loss"]) == [1, 2, 3]


def test_failing_sink_is_dropped_and_records_are_complete(tmp_path):
    (tmp_path / "not_a_dir").write_text("a file where the log folder should be")
    reference = train(tmp_path / "plain")
    with pytest.warns(UserWarning, match="sink TensorBoardSink failed") as caught:
        mon = train(tmp_path / "run", sinks=[TensorBoardSink(tmp_path / "not_a_dir" / "tb")])
    assert sum("sink TensorBoardSink failed" in str(w.message) for w in caught) == 1  # once, then dropped
    assert not mon.sinks and reference.step_num == mon.step_num == STEPS
    got, want = gradvar.read_records(tmp_path / "run"), gradvar.read_records(tmp_path / "plain")
    cols = [c for c in want["steps"] if c not in ("time_s", "tokens_per_s")]
    assert np.array_equal(got["steps"][cols].to_numpy(float), want["steps"][cols].to_numpy(float), equal_nan=True)
    notes = got["events"][got["events"]["kind"] == "note"]["message"]
    assert notes.str.contains("TensorBoardSink failed").sum() == 1


def _ddp_worker(rank, world, port, run_dir, tb_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(tiny_gpt2())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, run_dir, "paper", flush_every=2, sinks=[TensorBoardSink(tb_dir)])
    g = torch.Generator().manual_seed(rank)
    for _ in range(3):
        x = torch.randint(0, 64, (2, 16), generator=g)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    dist.barrier()
    os._exit(0)  # as test_ddp_monitor: no DDP teardown (a gloo join can deadlock)


@pytest.mark.slow  # two spawned processes importing torch: tens of seconds on a small machine
def test_ddp_only_rank0_writes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tb_dir = tmp_path / "tb"
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path / "run"), str(tb_dir)), nprocs=2, start_method="spawn")
    assert len(list(tb_dir.glob("events.out.tfevents.*"))) == 1
    steps = gradvar.read_records(tmp_path / "run")["steps"]
    tb = tensorboard_scalars(tb_dir)
    assert tb["gradvar/loss"] == dict(zip(steps["step"], steps["loss"]))
    assert tb["gradvar/world_size"] == {1: 2.0, 2: 2.0, 3: 2.0}
