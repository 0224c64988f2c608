"""A tiny transformers.Trainer run instrumented with one callback writes the records."""

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
from gv_helpers import tiny_gpt2  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

import gradvar  # noqa: E402
from gradvar.integrations.hf import GradvarCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=32, length=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def mean_loss(logits, labels) -> float:
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten()).item()


def hf_args(out, **kw) -> TrainingArguments:
    """The tests' Trainer setup: CPU, batches of 4 accumulated twice, LR 1e-3, nothing saved or reported."""
    base = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3}
    base |= {"report_to": [], "save_strategy": "no", "use_cpu": True, "disable_tqdm": True}
    return TrainingArguments(output_dir=str(out), **(base | kw))


def test_trainer_callback_writes_records(tmp_path):
    args = hf_args(tmp_path / "hf", max_steps=4, max_grad_norm=0.5, logging_steps=1)
    model = tiny_gpt2()
    micro_means = []  # the naive reference: each training forward's mean next-token loss, from its logits
    model.register_forward_hook(
        lambda m, a, kw, out: micro_means.append(mean_loss(out.logits, kw["labels"])), with_kwargs=True
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens())
    trainer.add_callback(GradvarCallback(tmp_path / "gv", flush_every=2))
    trainer.train()
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    assert steps.step.tolist() == [1, 2, 3, 4]
    assert (steps.micro_batches == 2).all() and (steps.seqlen == 16).all() and (steps.batch_size == 8).all()
    assert steps.tokens.tolist() == [128, 256, 384, 512]
    assert np.isfinite(steps[["loss", "grad_norm", "adam_v_max", "grad_trace_sigma"]].to_numpy()).all()
    assert (steps.grad_norm_clipped <= 0.5 + 1e-4).all()
    hf_norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    assert np.allclose(steps.grad_norm, hf_norms, rtol=1e-4), "pre-clip norm as the Trainer logs it"
    # The Trainer passes num_items_in_batch, and each micro-batch's .loss is then its share of the step's loss
    # (about half of its mean here); the records hold the micro-batches' mean losses.
    means = np.array(micro_means).reshape(4, 2)  # (step, micro-batch)
    assert np.allclose(steps.loss, means.mean(1), rtol=1e-5)
    assert np.allclose(steps.loss_max, means.max(1), rtol=1e-5)
    # the LR each update applied (linear decay from 1e-3 over 4 steps), not the one the scheduler set after it
    assert np.allclose(steps.lr, 1e-3 * (1 - np.arange(4) / 4))
    assert args.max_grad_norm == 0.5, "clipping handed back after training"


def test_trainer_callback_divides_out_accelerates_loss_scale(tmp_path):
    """fp16 Trainer runs backpropagate accelerate's scaled loss. accelerate makes a GradScaler only on an
    accelerator device, so this run installs a real CPU one in its place (fp32 compute, the scaling path
    exactly as under fp16, and accelerate's unscaling before the Trainer's clipping): the records must equal an
    unscaled run's, clipping included."""
    got = {}
    for scaled in (False, True):
        args = hf_args(tmp_path / f"hf{scaled}", max_steps=3, max_grad_norm=0.05)
        trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens())
        if scaled:
            acc = trainer.accelerator
            acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
            # what accelerate's fp16 branch of unscale_gradients does before the Trainer clips
            acc.unscale_gradients = lambda optimizer=None, acc=acc, trainer=trainer: acc.scaler.unscale_(
                trainer.optimizer.optimizer
            )
        trainer.add_callback(GradvarCallback(tmp_path / f"gv{scaled}"))
        trainer.train()
        assert (trainer.accelerator.scaler is not None) == scaled
        got[scaled] = gradvar.read_records(tmp_path / f"gv{scaled}")["steps"]
    cols = ["loss", "grad_norm", "grad_norm_clipped", "grad_trace_sigma", "grad_var_max", "adam_v_max", "adam_v_l1"]
    assert (got[True].grad_norm > 0.05).all(), "every step clips, so clipping scaled gradients would show"
    assert got[True].grad_var_max.notna().tolist() == [True, False, False]  # paper: steps 1, 21, 41, ...
    for col in cols:
        assert np.allclose(got[True][col], got[False][col], rtol=1e-4, equal_nan=True), col
