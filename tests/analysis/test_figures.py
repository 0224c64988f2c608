"""Every figure function returns a Figure and saves a valid PNG."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis.records.correlate import lagged_correlation
from analysis.report import figure_style as S
from analysis.report import figures as F
from gradvar.slw import SLWSchedule

PNG = b"\x89PNG\r\n\x1a\n"


def steps_frame(run="a", n=400, slw=False):
    step = np.arange(1, n + 1)
    loss = 3 + 3 * np.exp(-step / 80)
    loss[200] *= 1.5
    v = 1e-4 * (1 + step / n)
    return pd.DataFrame(
        {
            "run": run,
            "method": "slw" if slw else "baseline",
            "step": step,
            "loss": loss,
            "probe_loss": np.where(step % 20 == 0, loss + 0.1, np.nan),
            "adam_v_max": v,
            "adam_v_l1": v * 100,
            "seqlen": np.minimum(512, 8 + step * 2) if slw else 512,
            "tokens": np.cumsum(np.full(n, 512 * 8)),
        }
    )


def probes_frame():
    rows = [
        {"run": "a", "step": s, "probe_seqlen": L, "grad_sq_max": L * s * 1e-6}
        for s in range(10, 401, 10)
        for L in (64, 128, 256, 512)
    ]
    return pd.DataFrame(rows)


def grid_frame():
    return pd.DataFrame(
        {
            "method": ["baseline", "baseline", "slw", "slw"],
            "batch_size": [8, 32, 8, 32],
            "lr": [0.1, 0.3, 0.1, 0.3],
            "class": ["stable", "spiky", "stable", "diverged"],
            "n_stable": [3, 0, 3, 0],
            "n_spiky": [0, 3, 0, 1],
            "n_diverged": [0, 0, 0, 2],
            "spike_events_median": [0, 4, 0, 2],
        }
    )


def lags_frame():
    x = np.random.default_rng(0).standard_normal(500)
    lag = lagged_correlation(x, np.roll(x, 2), 5)
    return pd.concat(
        [
            lag.assign(run="pooled", signal="adam_v_max", transform="raw"),
            lag.assign(run="pooled", signal="grad_norm", transform="dlog", r=lag["r"] / 2),
        ]
    )


def evals_frame():
    rows = []
    for run, method, scale in (("a", "baseline", 1.0), ("b", "slw", 0.7)):
        for s in (100, 200, 300):
            rows.append(
                {
                    "run": run,
                    "method": method,
                    "step": s,
                    "tokens": s * 4096 * scale,
                    "val_loss": 6 - s / 100,
                    "time_s": s * scale,
                }
            )
    return pd.DataFrame(rows)


CASES = {
    "loss": lambda: F.fig_loss(pd.concat([steps_frame("a"), steps_frame("b", slw=True)])),
    "adam_variance": lambda: F.fig_adam_variance(steps_frame()),
    "signal_scatter": lambda: F.fig_signal_scatter(
        pd.DataFrame({"value": np.arange(50.0), "loss_ratio": 1 + np.arange(50) / 100}), label="adam_v_max"
    ),
    "lag": lambda: F.fig_lag(lags_frame()),
    "seqlen_heatmap": lambda: F.fig_seqlen_heatmap(probes_frame()),
    "slw_schedule": lambda: F.fig_slw_schedule(
        pd.concat([steps_frame("a"), steps_frame("b", slw=True)]), SLWSchedule("fixed_linear", 8, 512, 300, 8)
    ),
    "val_loss": lambda: F.fig_val_loss(evals_frame()),
    "stability_grid": lambda: F.fig_stability_grid(grid_frame()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_figure_saves_valid_png(name, tmp_path):
    fig = CASES[name]()
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    S.save_png(fig, path)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000


def test_scatter_title_has_r():
    fig = CASES["signal_scatter"]()
    assert "Pearson r = +1.00" in fig.axes[0].get_title()


def test_empty_heatmap_still_a_figure(tmp_path):
    empty = F.fig_seqlen_heatmap(probes_frame().iloc[:0])
    S.save_png(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG


def test_thinning_keeps_spikes_and_bounds_points():
    y = np.ones(1_000_000)
    y[123_457] = 50.0
    x, ty = S.thin(np.arange(len(y)), y, max_points=4000)
    assert len(x) <= 4002 and ty.max() == 50.0 and 123_457 in set(x)
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in S.styles(8)}) == 8
