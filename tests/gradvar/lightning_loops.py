"""Lightning modules and a reference callback for the Lightning tests (also run under torchrun)."""
from __future__ import annotations

import lightning as L
import torch

from client_loops import reference
from gv_helpers import tiny_gpt2

B, T, ACCUM, CLIP = 4, 16, 2, 0.05


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 48):
        self.x = torch.randint(0, 64, (n, T), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


class Module(L.LightningModule):
    def __init__(self, manual: bool = False):
        super().__init__()
        self.gpt = tiny_gpt2()
        self.automatic_optimization = not manual

    def loss(self, x):
        return self.gpt(input_ids=x, labels=x).loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        self.manual_backward(loss / ACCUM)
        if (batch_idx + 1) % ACCUM == 0:
            self.clip_gradients(opt, gradient_clip_val=CLIP, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad()
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class Reference(L.Callback):
    """At each step's first micro-batch, the reference columns from the step's micro-batches, which this
    rank's and the other ranks' loaders hand out (DistributedSampler order: batch i of rank r holds
    sequences r, r + W, r + 2W, ...)."""

    def __init__(self, data: Data, world: int = 1):
        self.data, self.world, self.refs = data, world, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % ACCUM:
            return
        per_step = B * ACCUM * self.world
        step = self.data.x[batch_idx // ACCUM * per_step : (batch_idx // ACCUM + 1) * per_step]
        ranks = [step[r :: self.world] for r in range(self.world)]  # (B * ACCUM, T) each
        chunks = [x[i * B : (i + 1) * B] for x in ranks for i in range(ACCUM)]
        self.refs.append(reference(pl_module, [lambda c=c: pl_module.loss(c) for c in chunks], CLIP))


def fit(module, callbacks, root, manual: bool = False, **trainer_kwargs):
    kw = {} if manual else {"accumulate_grad_batches": ACCUM, "gradient_clip_val": CLIP}
    trainer = L.Trainer(default_root_dir=str(root), accelerator="cpu", max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, **kw, **trainer_kwargs)
    trainer.fit(module, torch.utils.data.DataLoader(Data(), batch_size=B))
    return trainer
