"""torchrun --nproc_per_node 2 lightning_ddp_run.py RUN_DIR: a Lightning DDP fit (gloo, CPU) with the callback;
rank 0 checks the records against the micro-batch gradients of all ranks and prints OK."""

import sys

import torch

torch.set_num_threads(1)

from client_loops import check
from lightning_loops import ACCUM, B, Module, Reference, T, fit

import gradvar
from gradvar.integrations.lightning import GradvarCallback

run_dir = sys.argv[1]
ref = Reference()
trainer = fit(Module(), [ref, GradvarCallback(run_dir)], run_dir + "-lightning", strategy="ddp", devices=2)
if trainer.global_rank == 0:
    steps = gradvar.read_records(run_dir)["steps"]
    check(steps, ref.refs, b_s=B, seqlen=T)
    assert (steps.micro_batches == 2 * ACCUM).all()
    print("OK", len(steps))
