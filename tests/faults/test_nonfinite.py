"""Non-finite loss and gradients, injected into an in-process smoke run at step 4 (`intervention.nonfinite`):
they are recorded (steps columns and events, with their step); `skip` leaves parameters and optimizer state
exactly as they were and training goes on; `stop` ends the run with a message naming the step and the
signals of the steps before it (`gradvar train` exits 3); `record` applies the update regardless."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradvar
import trainer.train as train_mod
from trainer import cli
from trainer.train import EXIT_NONFINITE, NonFiniteError, Trainer

BAD = 4


class InfGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite); the backward makes every gradient non-finite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * math.inf


@pytest.fixture
def inject(monkeypatch):
    """inject("nan_loss" | "inf_grad"): poison the first micro-batch of step BAD of any Trainer run here."""

    def install(kind: str):
        now = {"step": 0, "micro": 0}
        real_step, real_loss = Trainer.train_step, train_mod.next_token_loss

        def train_step(self):
            now["step"], now["micro"] = self.step + 1, 0
            return real_step(self)

        def loss(model, x):
            out = real_loss(model, x)
            if not model.training:
                return out
            now["micro"] += 1
            if now["step"] == BAD and now["micro"] == 1:
                return out * math.nan if kind == "nan_loss" else InfGrad.apply(out)
            return out

        monkeypatch.setattr(Trainer, "train_step", train_step)
        monkeypatch.setattr(train_mod, "next_token_loss", loss)

    return install


def cfg_for(smoke, tmp_path, name, policy, steps=6, variant=None):
    return smoke.cfg(
        tmp_path,
        name,
        {
            "intervention.nonfinite": policy,
            "optim.max_steps": steps,
            "eval.every": 0,
            "checkpoint.every": 0,
            **(variant or {}),
        },
    )


def same_state(a: dict, b: dict) -> bool:
    model = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    opt = all(
        torch.equal(v, b["optimizer"]["state"][i][k]) for i, s in a["optimizer"]["state"].items() for k, v in s.items()
    )
    return model and opt


VARIANTS = {
    "host-flag": {},
    "fused-on-device": {"optim.fused": True},
    "skip-step-on-device": {"intervention.skip_spikes": True},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["nan_loss", "inf_grad"])
def test_skip_records_and_skips_the_update(smoke, tmp_path, inject, kind, variant):
    """Plain AdamW: the trainer reads a flag. Fused AdamW and the skip-step AdamW skip on the device (found_inf)."""
    overrides = VARIANTS[variant]
    before = cfg_for(smoke, tmp_path, "before", "skip", steps=BAD - 1, variant=overrides)
    smoke.train(before)  # the state after step 3, no fault
    inject(kind)
    cfg = cfg_for(smoke, tmp_path, "skip", "skip", steps=BAD, variant=overrides)
    smoke.train(cfg)
    assert same_state(smoke.final_state(before.run_dir), smoke.final_state(cfg.run_dir))  # step 4 changed nothing
    assert smoke.final_state(cfg.run_dir)["optimizer"]["state"][0]["step"] == BAD - 1

    cfg = cfg_for(smoke, tmp_path, "on", "skip", variant=overrides)  # and training goes on
    smoke.train(cfg)
    t = gradvar.read_records(cfg.run_dir)
    steps, events = t["steps"].set_index("step"), t["events"]
    if kind == "nan_loss":
        assert steps.loc[BAD, "nonfinite_loss"] == 1 and np.isnan(steps.loc[BAD, "loss"])
        assert ((events["kind"] == "nonfinite_loss") & (events["step"] == BAD)).sum() == 1
    else:
        assert steps.loc[BAD, "nonfinite_loss"] == 0 and np.isfinite(steps.loc[BAD, "loss"])
        assert steps.loc[BAD, "nonfinite_grad"] > 0 and not np.isfinite(steps.loc[BAD, "grad_norm"])
        assert ((events["kind"] == "nonfinite_grad") & (events["step"] == BAD)).sum() == 1
    skips = events.query("kind == 'nonfinite_skip'")
    assert list(skips["step"]) == [BAD] and f"at step {BAD}: update skipped" in skips["message"].iloc[0]
    others = steps.drop(index=BAD)
    assert (others["nonfinite_loss"] == 0).all() and (others["nonfinite_grad"] == 0).all()
    if overrides:
        assert steps.loc[BAD, "update_skipped"] == 1 and (others["update_skipped"] == 0).all()
    assert np.isfinite(others["loss"]).all() and list(steps.index) == list(range(1, 7))


@pytest.mark.parametrize("kind", ["nan_loss", "inf_grad"])
def test_stop_names_the_step_and_the_signals_before_it(smoke, tmp_path, inject, kind):
    inject(kind)
    cfg = cfg_for(smoke, tmp_path, "stop", "stop")
    with pytest.raises(NonFiniteError) as info:
        smoke.train(cfg)
    msg = str(info.value)
    assert msg.startswith(f"non-finite loss or gradient at step {BAD} (intervention.nonfinite=stop)")
    table = msg.splitlines()[1:]
    assert table[0].split()[:4] == ["step", "seqlen", "lr", "loss"] and "adam_v_max" in table[0]
    assert [int(float(line.split()[0])) for line in table[1:]] == list(range(1, BAD + 1))
    steps = smoke.steps(cfg.run_dir)
    assert list(steps["step"]) == list(range(1, BAD + 1))  # flushed up to the bad step, included
    events = gradvar.read_records(cfg.run_dir, ["events"])["events"]
    assert list(events.query("kind == 'nonfinite_stop'")["step"]) == [BAD]


def test_stop_from_the_command_line_exits_3(smoke, tmp_path, inject, capsys):
    inject("nan_loss")
    argv = smoke.cli_args(tmp_path, "cli", "--intervention.nonfinite", "stop", "--eval.every", "0")
    assert cli.main(argv) == EXIT_NONFINITE == 3
    err = capsys.readouterr().err
    assert err.startswith(f"gradvar train: stopped: non-finite loss or gradient at step {BAD}")
    assert "Traceback" not in err


def test_record_only_applies_the_update(smoke, tmp_path, inject):
    inject("inf_grad")
    cfg = cfg_for(smoke, tmp_path, "record", "record")
    smoke.train(cfg)  # no exception: 'record' never syncs to decide
    steps = smoke.steps(cfg.run_dir).set_index("step")
    assert steps.loc[BAD, "nonfinite_grad"] > 0
    assert not steps.loc[BAD + 1 :, "loss"].apply(np.isfinite).any()  # the poisoned update reached the weights
    state = smoke.final_state(cfg.run_dir)
    assert not all(torch.isfinite(v).all() for v in state["model"].values())
    events = gradvar.read_records(cfg.run_dir, ["events"])["events"]
    assert "nonfinite_skip" not in set(events["kind"]) and BAD in set(events.query("kind == 'nonfinite_grad'")["step"])
