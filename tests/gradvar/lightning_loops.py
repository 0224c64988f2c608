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
    """The reference columns of each step from the micro-batches every rank's loader handed out (gathered
    over ranks), computed at the step's last micro-batch, before the update."""

    def __init__(self):
        self.refs, self._seen = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.world_size > 1:
            got = [torch.empty_like(batch) for _ in range(trainer.world_size)]
            torch.distributed.all_gather(got, batch)
            self._seen += got
        else:
            self._seen.append(batch)
        if batch_idx % ACCUM == ACCUM - 1:
            chunks, self._seen = self._seen, []
            self.refs.append(reference(pl_module, [lambda c=c: pl_module.loss(c) for c in chunks], CLIP))


def fit(module, callbacks, root, manual: bool = False, **trainer_kwargs):
    kw = {} if manual else {"accumulate_grad_batches": ACCUM, "gradient_clip_val": CLIP}
    trainer = L.Trainer(
        default_root_dir=str(root),
        accelerator="cpu",
        max_steps=3,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **{"logger": False, **kw, **trainer_kwargs},
    )
    trainer.fit(module, torch.utils.data.DataLoader(Data(), batch_size=B))
    return trainer
