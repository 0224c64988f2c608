"""The test-only planted causes (`intervention.plant`): parsing, the LR factor at one step and one group, the
planted batch, and the optimizer groups the LR plant splits off (the same update until the planted step)."""

import pytest
import torch

from trainer.config import ConfigError
from trainer.model import param_groups
from trainer.plant import Plant, parse_plant


def test_parse():
    assert parse_plant("") is None
    assert parse_plant("lr@12:block1.mlp*100") == Plant("lr", 12, group="block1.mlp", factor=100.0)
    assert parse_plant("batch@7:repeat") == Plant("batch", 7, batch="repeat")


@pytest.mark.parametrize("bad", ["lr@12:block1.mlp", "lr@0:block1.mlp*2", "batch@3:zeros", "x@3:y", "lr@3:g*-1"])
def test_malformed_plant_is_one_config_error(bad):
    with pytest.raises(ConfigError, match="intervention.plant"):
        parse_plant(bad)


def test_lr_scale_only_at_the_step_and_on_planted_groups():
    p = parse_plant("lr@5:block0.attn*10")
    assert p.lr_scale(5, {"planted": True}) == 10.0
    assert p.lr_scale(4, {"planted": True}) == 1.0 and p.lr_scale(5, {}) == 1.0


def test_planted_batch_replaces_only_its_step_and_keeps_the_shape():
    batch = torch.arange(24, dtype=torch.long).reshape(2, 12)
    p = parse_plant("batch@3:repeat")
    assert p.replace_batch(2, batch, 50, 0) is batch
    out = p.replace_batch(3, batch, 50, 0)
    assert out.shape == batch.shape and out.dtype == batch.dtype and len(out.unique()) == 1
    rnd = parse_plant("batch@3:random").replace_batch(3, batch, 50, 0)
    assert torch.equal(rnd, parse_plant("batch@3:random").replace_batch(3, batch, 50, 0))  # seeded, repeatable
    assert int(rnd.max()) < 50


def test_param_groups_split_the_planted_group_and_keep_the_rest():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=8, vocab_size=32))
    plain = param_groups(model, 0.1)
    split = param_groups(model, 0.1, "block1.mlp")
    n = lambda groups: sum(len(g["params"]) for g in groups)  # noqa: E731
    assert n(plain) == n(split)
    planted = [p for g in split if g.get("planted") for p in g["params"]]
    names = {id(p): k for k, p in model.named_parameters()}
    assert planted and all(".h.1.mlp." in names[id(p)] for p in planted)
    assert {g["weight_decay"] for g in split if g.get("planted")} == {0.1, 0.0}
    with pytest.raises(ConfigError, match="no parameter of group"):
        param_groups(model, 0.1, "block9.mlp")
