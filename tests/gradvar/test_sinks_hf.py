"""The HF callback sends gradvar's scalars where the Trainer's `report_to` sends its logs: the W&B run the
WandbCallback started (offline, read back from its .wandb log) and TensorBoard beside the Trainer's run."""

from pathlib import Path

import pytest
import wandb
from dashboard_files import tensorboard_scalars, wandb_history
from gv_helpers import tiny_gpt2
from test_hf_trainer import Tokens, hf_args
from transformers import Trainer

import gradvar
from gradvar.integrations.hf import GradvarCallback


@pytest.mark.slow  # a Trainer run with W&B's offline service (about 15 s)
def test_report_to_tensorboard_and_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # wandb's process-wide settings may predate WANDB_DIR: keep its files out of the repo
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    args = hf_args(tmp_path / "hf", max_steps=4, logging_steps=1, report_to=["tensorboard", "wandb"])
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens())
    trainer.add_callback(GradvarCallback(tmp_path / "gv", flush_every=2))
    trainer.train()
    run_file = Path(wandb.run.settings.sync_file)
    wandb.finish()
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    tb = tensorboard_scalars(tmp_path / "hf" / "runs" / "gradvar")
    assert tb["gradvar/loss"] == dict(zip(steps["step"], steps["loss"]))
    hist = wandb_history(run_file)
    ours = [r for r in hist if "gradvar/step" in r]
    assert [r["gradvar/step"] for r in ours] == [1, 2, 3, 4]
    assert [r["gradvar/grad_norm"] for r in ours] == steps["grad_norm"].tolist()
    assert any("train/loss" in r for r in hist)  # the Trainer's own logs are in the same run
