"""The model switches behind the GPU preset's speed: SDPA against eager attention, a compiled training loss
against the eager one (the records too), and the FLOP accounting behind MFU."""

import math
import time

import numpy as np
import pytest
import torch

from trainer.config import ConfigError, apply_overrides
from trainer.model import build_model, compiled, count_params, flops_per_token, mfu, peak_flops
from trainer.recipes import preset
from trainer.train import Trainer, next_token_loss


def tiny_cfg(data_cache, tmp_path, name, **overrides):
    """The tiny preset's model (4 x 128, context 512, batch 8) on the session's bpe2k cache."""
    cfg = preset("tiny")
    return apply_overrides(
        cfg,
        {
            "out_dir": str(tmp_path),
            "name": name,
            "data.cache_dir": str(data_cache),
            "data.tokenizer": "bpe2k",
            "eval.every": 0,
            "checkpoint.every": 0,
            **overrides,
        },
    )


def losses_and_time(cfg, steps):
    t = Trainer(cfg, log=lambda *a, **k: None)
    t.train_step()  # first-step allocations out of the timing
    start = time.perf_counter()
    losses = [torch.stack(t.train_step()).mean().item() for _ in range(steps)]
    sec = (time.perf_counter() - start) / steps
    t.monitor.close()
    return np.array(losses), sec


@pytest.mark.slow
def test_sdpa_and_eager_attention_train_the_same(data_cache, tmp_path):
    sdpa, t_sdpa = losses_and_time(tiny_cfg(data_cache, tmp_path, "sdpa"), 3)
    eager, t_eager = losses_and_time(tiny_cfg(data_cache, tmp_path, "eager", **{"model.attn": "eager"}), 3)
    print(f"tiny preset CPU step: sdpa {1000 * t_sdpa:.0f} ms, eager {1000 * t_eager:.0f} ms")
    # the same function in fp32 through two kernels: rounding-level differences, after three updates too
    np.testing.assert_allclose(sdpa, eager, rtol=1e-5)
    assert len(set(sdpa.round(6))) == 3  # the model trained: three different losses


@pytest.mark.slow
def test_compiled_trainer_records_what_eager_records(smoke, tmp_path):
    """The monitor ('full': probes, update size, head hook) sees through a compiled training loss."""
    torch._dynamo.reset()
    runs = {}
    for backend in ("off", "aot_eager"):
        cfg = smoke.cfg(
            tmp_path,
            backend,
            {
                "model.compile": backend,
                "monitor.quantities": "full",
                "optim.train_tokens": 8 * 4 * 128,
                "monitor.probe_every": 4,
            },
        )
        smoke.train(cfg)
        runs[backend] = smoke.steps(cfg.run_dir)
    eager, comp = runs["off"], runs["aot_eager"]
    cols = [
        "loss",
        "grad_norm",
        "grad_trace_sigma",
        "grad_var_max",
        "adam_v_max",
        "adam_v_l1",
        "update_rms",
        "max_output_logit",
        "probe_loss",
    ]
    assert len(comp) == len(eager) == 8
    for col in cols:
        assert np.isfinite(comp[col]).any(), col
        np.testing.assert_allclose(comp[col], eager[col], rtol=1e-4, err_msg=col)


def test_compile_off_is_the_plain_function_and_bad_names_are_config_errors():
    assert compiled(next_token_loss, "off") is next_token_loss
    with pytest.raises(ConfigError, match="model.compile"):
        compiled(next_token_loss, "inductorr")
    cfg = preset("smoke").model
    cfg.attn = "flash"
    with pytest.raises(ConfigError, match="model.attn"):
        build_model(cfg, 64)


def test_gpu_preset_defaults():
    cfg = preset("gpt2-117m")
    assert (cfg.model.attn, cfg.model.compile, cfg.optim.fused) == ("sdpa", "inductor", True)
    assert preset("tiny").model.compile == "off"


def test_flops_and_mfu_closed_form():
    cfg = preset("gpt2-117m").model
    with torch.device("meta"):  # shapes only: no 124M-parameter initialisation
        n = count_params(build_model(cfg, 50257))
    assert n == 124_439_808  # GPT-2 small with a tied head
    per_token = flops_per_token(cfg, n, 1024)
    assert per_token == 6 * n + 12 * 12 * 768 * 1024
    assert per_token == 859_885_056  # 6 x 124,439,808 + 113,246,208
    assert mfu(200_000, cfg, n, 1024, "NVIDIA H200") == pytest.approx(200_000 * 859_885_056 / 989e12)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA GH200 480GB") == 989e12
    assert math.isnan(peak_flops("NVIDIA GeForce RTX 4090"))  # unknown peak: no MFU rather than a wrong one
    assert math.isnan(mfu(1e5, cfg, n, 1024, "cpu"))
