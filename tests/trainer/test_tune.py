"""tune-slw's rule on constructed evaluation curves, and one real short tuning run."""
import json
import math

import numpy as np
import pytest

from trainer.tune import choose_t, fluctuation


def test_fluctuation_is_largest_relative_ppl_rise():
    assert fluctuation([5.0, 4.0, 3.0]) == 0.0
    assert fluctuation([5.0, 4.0, 4.1, 3.0]) == pytest.approx(math.exp(0.1) - 1)
    assert math.isinf(fluctuation([5.0, np.nan]))


def test_choose_largest_stable_t():
    assert choose_t({5: 0.0, 10: 0.01, 20: 0.2, 40: 0.01}, 0.05) == 40
    assert choose_t({5: 0.3, 10: math.inf}, 0.05) is None


@pytest.mark.slow
def test_tune_slw_end_to_end(tmp_path, data_cache):
    from gradvar.cli import main

    rc = main(["tune-slw", "--preset", "smoke", "-o", str(tmp_path / "tune"), "--multiples", "2", "--jobs", "2",
               "--data.cache_dir", str(data_cache), "--optim.warmup_steps", "2"])
    out = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert rc in (0, 1)
    assert out["start"] in (8, 16, 32, 64) and len(out["evidence"][0]["fluctuation"]) == 6
    if rc == 0:
        slw = json.loads((tmp_path / "tune" / "slw.json").read_text())["slw"]
        assert slw["total_steps"] == out["T"] and slw["enabled"]
