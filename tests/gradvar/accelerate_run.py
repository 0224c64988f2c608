"""torchrun --nproc_per_node 2 accelerate_run.py RUN_DIR: the accelerate loop on 2 gloo ranks
(accelerate's MULTI_CPU: DDP over gloo); each rank saves its micro-batch gradients for the test to check."""

import sys

import torch

torch.set_num_threads(1)

from accelerate_loops import run  # noqa: E402

out = run(sys.argv[1], world=2)
torch.save(out, f"{sys.argv[1]}-rank{out['rank']}.pt")
print("done", out["rank"], len(out["steps"]))
