"""The HF callback across `resume_from_checkpoint`: every step recorded once, tokens continuous; the
Trainer's arguments untouched, also when training ends by an exception."""

from __future__ import annotations

import pytest

pytest.importorskip("accelerate")
from gv_helpers import tiny_gpt2
from test_hf_trainer import Tokens
from transformers import Trainer, TrainerCallback, TrainingArguments

import gradvar
from gradvar.integrations.hf import GradvarCallback


class Crash(TrainerCallback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise RuntimeError("node lost")


def args_for(out, steps):
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=steps,
        learning_rate=1e-3,
        max_grad_norm=0.5,
        report_to=[],
        save_steps=2,
        save_strategy="steps",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
    )


def test_resume_continues_steps_and_tokens(tmp_path):
    gv, out = tmp_path / "gv", tmp_path / "hf"
    args = args_for(out, 6)
    first = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens())
    first.add_callback(GradvarCallback(gv, flush_every=100))
    first.add_callback(Crash(at=3))  # after the checkpoint at step 2: step 3's row must be redone once
    with pytest.raises(RuntimeError, match="node lost"):
        first.train()
    assert args.max_grad_norm == 0.5, "the Trainer's arguments are the user's, crash or not"
    second = Trainer(model=tiny_gpt2(), args=args_for(out, 6), train_dataset=Tokens())
    second.add_callback(GradvarCallback(gv, flush_every=100))
    second.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    steps = gradvar.read_records(gv)["steps"]
    assert steps.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert steps.tokens.tolist() == [128 * i for i in range(1, 7)]
    hf = {h["step"]: h["grad_norm"] for h in second.state.log_history if "grad_norm" in h}
    assert all(abs(steps.grad_norm[s - 1] - hf[s]) < 1e-4 * hf[s] for s in range(3, 7))
    events = gradvar.read_records(gv)["events"]
    assert "resume" in events.kind.tolist()
