"""The report's first figure on the committed real logs: panels, labels, shaded events, envelopes that keep spikes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from analysis.diagnosis import diagnose
from analysis.diagnosis.overview import envelope, fig_overview
from analysis.diagnosis.report import write_diagnosis_report
from analysis.logs import from_frame, load_log

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"


def _spans(ax) -> list:
    """(x0, x1) of each axvspan patch (a Rectangle spanning the axes' height)."""
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if isinstance(p, Rectangle)]


def test_megatron_overview_has_three_panels_and_every_event_shaded():
    log = load_log(DATA / "megatron_bigscience_gpt2_ds-off.out")
    d = diagnose(log)
    fig = fig_overview(log, d)
    axes = fig.axes
    assert [a.get_ylabel() for a in axes] == ["training loss (nats)", "grad norm", "learning rate"]
    assert axes[-1].get_xlabel() == "step" and len(d.spikes) == 2
    half = d.interval / 2
    want = [(s - half, e + half) for s, e in zip(d.spikes["start_step"], d.spikes["end_step"])]
    for ax in axes:
        assert np.allclose(_spans(ax), want)
    labels = [t.get_text() for t in axes[0].texts]
    assert labels == [f"#{k}" for k in d.spikes["event"]]
    assert axes[1].get_yscale() == "log"  # grad norm spans 6..80, over one decade
    assert axes[0].get_yscale() == "linear"  # loss 12..48 stays within one decade


def test_log_without_grad_norm_or_lr_has_one_panel():
    log = load_log(DATA / "buildnanogpt_stdout_shakespeare.txt")
    d = diagnose(log)
    fig = fig_overview(log, d)
    have = [c for c in ("grad_norm", "lr") if c in log.df and np.isfinite(log.df[c]).any()]
    assert len(fig.axes) == 1 + len(have) and fig.axes[0].get_ylabel() == "training loss (nats)"


def test_100k_entry_line_keeps_the_spike_maximum_and_stays_short():
    real = pd.read_csv(DATA / "lightning_slm_metrics.csv")["train_loss_step"].dropna().to_numpy()
    loss = np.resize(real, 100_000)
    loss[61_234] = 40.0
    log = from_frame(pd.DataFrame({"step": np.arange(1, 100_001), "loss": loss}), source="long")
    d = diagnose(log)
    fig = fig_overview(log, d)
    line = fig.axes[0].lines[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert len(x) <= 4000 and y.max() == 40.0 and x[np.argmax(y)] == 61_235
    assert y.min() == np.nanmin(loss) and np.all(np.diff(x) >= 0)
    assert any(s <= 61_235 <= e for s, e in _spans(fig.axes[0]))
    tick = fig.axes[-1].xaxis.get_major_formatter()
    assert tick(20_000, 0) == "20k" and tick(1_500_000, 0) == "1.5M" and tick(500, 0) == "500"


def test_envelope_is_exact_below_the_threshold_and_keeps_extremes_above():
    x = np.arange(10.0)
    y = np.array([1, 2, np.nan, 4, 5, 6, 7, 8, 9, 10.0])
    ex, ey = envelope(x, y)
    assert np.array_equal(ex, np.delete(x, 2)) and np.array_equal(ey, np.delete(y, 2))
    rng = np.random.default_rng(0)
    y = rng.normal(size=12_345)
    ex, ey = envelope(np.arange(12_345), y, bins=100)
    assert len(ex) == 200 and ey.max() == y.max() and ey.min() == y.min()
    assert np.array_equal(y[ex.astype(int)], ey)


def test_overview_comes_first_in_both_reports(tmp_path):
    log = load_log(DATA / "megatron_bigscience_gpt2_ds-off.out")
    md = write_diagnosis_report(diagnose(log), log, tmp_path)
    text = md.read_text()
    assert (tmp_path / "overview.png").stat().st_size > 1000
    assert text.index("![overview](overview.png)") < text.index("## Summary") and text.count("overview.png") == 1
    page = (tmp_path / "report.html").read_text()
    assert page.index('alt="overview.png"') < page.index("<h2>Summary</h2>") and page.count("<img") == 3


def test_log_axis_ticks_are_plain_numbers():
    from analysis.diagnosis.overview import _log_tick

    assert [_log_tick(v) for v in (1, 2, 3, 5, 20, 40, 0.05)] == ["1", "2", "", "5", "20", "", "0.05"]
