"""GPU check of the Hugging Face callback under real fp16 (accelerate's GradScaler with autocast): the records
of an fp16 Trainer run must match an fp32 run's within fp16's rounding. On CPU the scaling path is tested by
tests/gradvar/test_hf_trainer.py with a CPU GradScaler put in accelerate's place; only a GPU runs fp16 itself.

    python scripts/gpu_hf_fp16.py            # about 30 s on one GPU; prints the comparison and PASS/FAIL
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import gradvar
from gradvar.integrations.hf import GradvarCallback

COLS = ("loss", "grad_norm", "grad_norm_clipped", "grad_trace_sigma", "grad_var_max", "adam_v_max", "adam_v_l1")
RTOL = 0.05


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=256, length=128, vocab=512):
        self.x = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def run(out: Path, fp16: bool):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=4,
            n_head=4,
            n_embd=256,
            n_positions=128,
            vocab_size=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )
    args = TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=20,
        learning_rate=1e-3,
        max_grad_norm=0.5,
        fp16=fp16,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens())
    trainer.add_callback(GradvarCallback(out / "gv"))
    trainer.train()
    assert (trainer.accelerator.scaler is not None) == fp16, "fp16 runs get accelerate's GradScaler"
    return gradvar.read_records(out / "gv")["steps"]


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_hf_fp16: needs a CUDA device", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        ref, half = run(Path(tmp) / "fp32", False), run(Path(tmp) / "fp16", True)
    ok = True
    for col in COLS:
        rel = np.abs(half[col].to_numpy() / ref[col].to_numpy() - 1)
        good = bool(np.isfinite(rel).all() and rel.max() < RTOL)
        ok &= good
        print(f"{col:<18} fp16/fp32 - 1: median {np.median(rel):.2e}, max {rel.max():.2e}  {'ok' if good else 'OFF'}")
    print(f"scaled loss divided out (fp16 records within {RTOL:.0%} of fp32): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
