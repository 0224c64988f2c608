"""No host read of a device value in the hot path (design: statistics stay on the device until the flush).

A host read is a host-device sync on a GPU; this machine has none, so `hostreads.HostReads` records the
operations that would sync, made from gradvar's or the trainer's code, while real steps run on CPU.
"""

from __future__ import annotations

import pytest
import torch
from gv_helpers import tiny_gpt2
from hostreads import HostReads

import gradvar


def lm_loss(model, x):
    return model(input_ids=x, labels=x).loss


def monitored_loop(tmp_path, preset: str, micro: int):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    probe = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    seqlen_probe = {"probe_every": 2, "probe_seqlens": [9, 17]} if preset == "full" else {}
    mon = gradvar.Monitor(
        model, opt, tmp_path, preset, flush_every=1000, probe_batch=probe, handle_sigterm=False, **seqlen_probe
    )
    data = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))

    def step():
        chunks = data.split(micro)
        for x in chunks:
            (lm_loss(model, x) / len(chunks)).backward()
        mon.clip_grad_norm_(1.0)
        opt.step()
        mon.step(seqlen=16)
        opt.zero_grad(set_to_none=True)

    return mon, step


@pytest.mark.parametrize("preset", ["paper", "full"])
@pytest.mark.parametrize("micro", [2, 4], ids=["K2", "K1"])
def test_monitor_steps_never_read_device_values(tmp_path, preset, micro):
    mon, step = monitored_loop(tmp_path, preset, micro)
    step()  # the first step builds the device-side layouts once
    with HostReads() as watch:
        for _ in range(4):  # probe loss every step here, sequence-length probe at steps 2 and 4 (full)
            step()
    assert watch.hits == []
    with HostReads() as watch:  # the watcher does see reads: the flush makes its one copy to the host
        mon.flush()
    assert any("gradvar/combine.py" in h for h in watch.hits)
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert list(steps["step"]) == [1, 2, 3, 4, 5] and steps["adam_v_max"].notna().all()
    measured = [preset == "full" or step == 1 for step in range(1, 6)]  # paper: steps 1, 21, 41, ...
    assert steps["grad_var_max"].notna().tolist() == [m and micro == 2 for m in measured]  # K = 1: undefined


def trainer_steps(smoke, tmp_path, name, overrides, n=4):
    from trainer.train import Trainer

    cfg = smoke.cfg(
        tmp_path,
        name,
        {"eval.every": 0, "checkpoint.every": 0, "log_every": 1000, "monitor.flush_every": 1000, **overrides},
    )
    t = Trainer(cfg, log=lambda *a, **k: None)
    try:
        t.model.train()
        t.train_step()
        with HostReads() as watch:
            for _ in range(n):
                t.train_step()
    finally:
        t.monitor.close()
        t.close()
    return watch.hits


def test_trainer_hot_path_with_fused_adamw_never_reads_device_values(smoke, tmp_path):
    """The default non-finite policy (skip) decides on the device through the fused kernel's found_inf."""
    assert trainer_steps(smoke, tmp_path, "fused", {"optim.fused": True}) == []
    assert trainer_steps(smoke, tmp_path, "skipstep", {"intervention.skip_spikes": True}) == []


def test_trainer_reads_one_flag_per_step_without_the_fused_kernel(smoke, tmp_path):
    hits = trainer_steps(smoke, tmp_path, "loop", {"optim.fused": False})
    assert len(hits) == 4 and all("trainer/nonfinite.py" in h for h in hits)
    assert trainer_steps(smoke, tmp_path, "record", {"intervention.nonfinite": "record"}) == []
