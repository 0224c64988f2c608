"""Rules that degrade instead of going silent, and advice checked against what the log already shows: a jump in
a log of a handful of entries, the kind of a character-level model, clipping already on, grad_norm already
logged, a model with no sequence-length axis, 'early' read from the LR warmup, the LR first for an fp32 NaN
at a huge LR, and a real gradvar run whose loss never reached the monitor."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import gradvar
from analysis import diagnose

SLW = "Sequence Length Warmup"


def _frame(loss, **cols) -> pd.DataFrame:
    return pd.DataFrame({"step": np.arange(1, len(loss) + 1), "loss": loss, **cols})


# -- a short log still gets its events -------------------------------------------------------------------------


def test_a_6x_jump_in_an_8_entry_noisy_log_is_an_event():
    # A noisy fine-tune pasted as 8 entries: its log loss wobbles by ~0.3 per entry, so the noise gate (6 noise
    # scales from a handful of differences) is blind; a 6.4x one-step jump is still the largest thing in it.
    loss = [2.41, 1.95, 2.30, 1.72, 2.05, 13.1, 2.2, 1.9]
    d = diagnose(_frame(loss))
    assert d.run_class == "spiky"
    assert d.spikes["peak_step"].tolist() == [6]
    assert d.spikes["peak_ratio"].iloc[0] == pytest.approx(13.1 / 2.05, rel=0.05)


def test_short_noisy_log_without_a_jump_stays_stable():
    rng = np.random.default_rng(0)
    for seed in range(20):  # pure multiplicative noise of ~25%: no entry moves twice as far as every one before
        loss = 2.0 * np.exp(np.random.default_rng(seed).normal(0, 0.1, 10)) + rng.normal(0, 0.01, 10)
        assert diagnose(_frame(loss)).run_class == "stable", loss


def test_jump_at_the_last_entry_of_a_short_log_is_a_divergence():
    d = diagnose(_frame([3.0, 2.7, 2.5, 2.6, 2.4, 15.5]))
    assert d.run_class == "diverged" and d.spikes["peak_step"].tolist() == [6]


# -- the run's kind: vocabulary first, then the first loss against every plausible ln(V) ----------------------


def _char_log(tmp_path, vocab_line: str, name="train.txt"):
    lines = [vocab_line] if vocab_line else []
    loss = 1.2 + (2.833 - 1.2) * np.exp(-np.arange(30) / 12)
    lines += [f"iter {10 * i}: loss {v:.4f}, time 12.0ms, mfu 1.00%" for i, v in enumerate(loss)]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_char_model_from_scratch_at_ln17_named_by_its_vocabulary(tmp_path):
    d = diagnose(_char_log(tmp_path, "found vocab_size = 17 (inside data/chars/meta.pkl)"))
    kind = d.facts["run_kind"]
    assert kind["kind"] == "from_scratch", kind
    assert "ln(17)" in kind["evidence"][0] and "Kind: pre-training from scratch" in d.summary


def test_char_model_without_a_vocabulary_is_not_called_a_fine_tune(tmp_path):
    d = diagnose(_char_log(tmp_path, ""))
    kind = d.facts["run_kind"]
    assert kind["kind"] == "unknown" and "cannot tell" in kind["undecided"] and "ln(17)" in kind["undecided"]
    assert "cannot tell" in d.summary and "--vocab-size" in d.summary


def test_vocab_size_flag_decides_both_ways(tmp_path):
    p = _char_log(tmp_path, "")
    assert diagnose(p, vocab_size=17).facts["run_kind"]["kind"] == "from_scratch"
    assert diagnose(p, vocab_size=50257).facts["run_kind"]["kind"] == "fine_tune"


def test_first_loss_below_every_plausible_start_is_a_fine_tune_for_a_language_model():
    kind = diagnose(_frame(np.linspace(1.9, 1.5, 40), tokens_per_s=np.full(40, 900.0))).facts["run_kind"]
    assert kind["kind"] == "fine_tune" and "ln(17)" in kind["evidence"][0] and "'tokens_per_s'" in kind["evidence"][0]


def test_a_classifier_starting_at_ln2_is_not_called_a_fine_tune():
    # a two-class model from scratch starts at ln 2 = 0.69 and logs accuracy: no tokens, no vocabulary
    loss = 0.6931 * np.exp(-np.arange(40) / 60)
    kind = diagnose(_frame(loss, accuracy=np.linspace(0.5, 0.8, 40))).facts["run_kind"]
    assert kind["kind"] == "unknown" and "classifier" in kind["undecided"], kind


# -- advice checked against what the log shows ------------------------------------------------------------------


def _grad_spike_frame():
    rng = np.random.default_rng(1)
    n = 400
    loss = 2 + np.exp(-np.arange(n) / 100) + rng.normal(0, 0.01, n)
    grad = 1 + rng.normal(0, 0.03, n)
    grad[[150, 250]] = 12.0
    return _frame(loss, grad_norm=grad), grad


def test_clipping_visibly_on_gets_no_make_sure_clipping_is_on():
    df, grad = _grad_spike_frame()
    assert any("Make sure gradient clipping is on" in a for a in diagnose(df).advice)  # the advice exists ...
    df["grad_norm_clipped"] = np.minimum(grad, 1.0)  # ... and goes once the log shows clipping at work
    adv = diagnose(df).advice
    assert not any("Make sure gradient clipping is on" in a for a in adv), adv
    assert any("Clipping is on (grad_norm_clipped is below grad_norm" in a for a in adv), adv


def test_a_clip_column_counts_as_clipping_on():
    df, grad = _grad_spike_frame()
    df["clip_coef"] = np.where(grad > 1.0, 1.0 / grad, 1.0)
    assert not any("Make sure gradient clipping is on" in a for a in diagnose(df).advice)


def test_grad_norm_clipped_equal_to_grad_norm_is_not_clipping():
    df, grad = _grad_spike_frame()
    df["grad_norm_clipped"] = grad  # what an unclipped gradvar run records
    assert any("Make sure gradient clipping is on" in a for a in diagnose(df).advice)


def test_grad_norm_logged_every_step_is_not_asked_for():
    df, _ = _grad_spike_frame()
    assert not any("log grad_norm" in a for a in diagnose(df).advice)
    assert any("log grad_norm before clipping, every step" in a for a in diagnose(df[["step", "loss"]]).advice)


def _early_frame(event_frac: float, warm: int = 100, n: int = 2000, lr=True):
    i = np.arange(n)
    rng = np.random.default_rng(2)
    loss = 3 + 7 * np.exp(-i / 150) + rng.normal(0, 0.01, n)
    k = int(event_frac * n)
    loss[k : k + 10] *= 1.6  # a rise that lasts: an optimizer event, not a bad batch
    cols = {"lr": np.where(i < warm, 6e-4 * (i + 1) / warm, 6e-4)} if lr else {}
    return _frame(loss, **cols)


def test_early_means_in_or_near_the_lr_warmup():
    assert any(SLW in a and "in or near the LR warmup" in a for a in diagnose(_early_frame(0.06)).advice)
    adv = diagnose(_early_frame(0.29)).advice  # 29% of the run, long after a warmup that ended at 5%
    assert not any("Early instability" in a for a in adv), adv


def test_early_without_an_lr_is_the_first_few_percent_and_says_so():
    adv = next(a for a in diagnose(_early_frame(0.03, lr=False)).advice if "Early instability" in a)
    assert "first 5% of the steps" in adv and "no LR in the log" in adv
    assert not any("Early instability" in a for a in diagnose(_early_frame(0.2, lr=False)).advice)


def test_no_slw_for_a_model_without_a_sequence_axis(tmp_path):
    df = _early_frame(0.06)
    assert any(SLW in a for a in diagnose(df).advice)
    adv = diagnose(df, seq_axis=False).advice
    assert any("Early instability" in a for a in adv) and not any(SLW in a or "SLW" in a for a in adv), adv
    p = tmp_path / "word_lm.csv"  # the same log, its text naming an LSTM
    df.to_csv(p, index=False)
    p.write_text("# model: LSTM, 2 layers, bptt 35\n" + p.read_text())
    d = diagnose(p)
    assert d.facts["seq_axis"] is False and not any(SLW in a for a in d.advice), d.advice
    assert any("recurrent model (LSTM)" in a for a in d.advice)


def test_fp32_nan_at_lr_20_names_the_lr_first():
    loss = np.full(12, np.nan)
    d = diagnose(_frame(loss, lr=np.full(12, 20.0)))
    adv = d.advice[0]
    assert adv.index("The LR is the first suspect: 20") < adv.index("weights loaded"), adv
    # the same NaN under fp16 keeps the setup (and precision) first
    d16 = diagnose(_frame(loss, lr=np.full(12, 20.0), loss_scale=np.full(12, 65536.0)))
    assert "first suspect" not in d16.advice[0] and "precision" in d16.advice[0]


def test_fp32_nan_later_in_the_run_at_lr_20_names_the_lr_first():
    loss = np.r_[np.linspace(7, 5, 30), [np.nan] * 5]
    adv = next(a for a in diagnose(_frame(loss, lr=np.full(35, 20.0))).advice if "NaN/inf at step 31" in a)
    assert adv.index("The LR is the first suspect") < adv.index("Restart"), adv


# -- a real gradvar run whose loss never reached the monitor -----------------------------------------------------


def _run_without_loss(run_dir, steps=10, blow_up_at=7):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, str(run_dir), quantities="paper")
    with pytest.warns(UserWarning, match="no loss reached the monitor"):
        for step in range(1, steps + 1):
            x = torch.randn(16, 8) * (300.0 if step == blow_up_at else 1.0)
            for micro in x.split(8):  # a plain nn.Module: its forward returns a tensor, no `.loss`
                ((model(micro) - micro.sum(1, keepdim=True)) ** 2).mean().div(2).backward()
            opt.step()
            opt.zero_grad()
            mon.step()  # as the README's loop: no loss passed
    mon.close()


def test_gradvar_run_without_a_loss_is_not_diverged(tmp_path):
    _run_without_loss(tmp_path / "run")
    steps = gradvar.read_records(tmp_path / "run")["steps"]
    assert steps["loss"].isna().all() and np.isfinite(steps["grad_norm"]).all()  # the records as they are
    d = diagnose(tmp_path / "run")
    assert d.run_class == "no_loss" and not len(d.spikes)
    assert "no loss recorded: pass `mon.step(loss=...)`" in d.summary and "diverged" not in d.summary
    first = d.advice[0]
    assert first.startswith("No loss recorded: pass `mon.step(loss=...)`") and "not a NaN loss" in first
    # the other columns are still read: the gradient blow-up at step 7 and the Adam state
    g = steps["grad_norm"].to_numpy()
    assert f"grad_norm median {np.median(g):.3g}, max {g.max():.3g} at step 7" in first
    assert "adam_v_max median" in first
    assert any(a.startswith("grad_norm spiked to") and "at step 7" in a for a in d.advice), d.advice
    assert not any("NaN/inf" in a for a in d.advice + d.notes), (d.advice, d.notes)


def test_gradvar_run_with_a_nan_loss_is_still_diverged(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvar.Monitor(model, opt, str(tmp_path / "run"), quantities="paper")
    for step in range(1, 9):
        loss = model(torch.randn(4, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        mon.step(loss=loss if step < 6 else torch.tensor(math.nan))
    mon.close()
    d = diagnose(tmp_path / "run")
    assert d.run_class == "diverged" and "no loss recorded" not in d.summary.lower()


def test_cli_flags_vocab_size_and_no_seq_axis(tmp_path, capsys):
    from analysis.diagnosis.cli import main

    p = _char_log(tmp_path, "")
    assert main([str(p), "--vocab-size", "17", "--json"]) == 0
    assert '"kind": "from_scratch"' in capsys.readouterr().out
    csv = tmp_path / "early.csv"
    _early_frame(0.06).to_csv(csv, index=False)
    assert main([str(csv), "--no-seq-axis"]) == 0
    out = capsys.readouterr().out
    assert "Early instability" in out and SLW not in out and "--no-seq-axis" in out
    assert main([str(p), "--vocab-size", "1"]) == 2 and "--vocab-size must be >= 2" in capsys.readouterr().err


def test_a_jump_at_the_third_entry_is_an_event_when_it_triples_the_loss():
    d = diagnose(_frame([0.70, 0.81, 4.3, 0.76, 0.58, 0.80]))
    assert d.run_class == "spiky" and d.spikes["peak_step"].tolist() == [3]
    assert diagnose(_frame([0.70, 0.81, 1.9, 0.76, 0.58, 0.80])).run_class == "stable"  # 2.3x: not yet


def test_a_short_excerpt_that_ends_well_above_its_minimum_is_diverged():
    # an excerpt of a run that had come down and climbs back over its last entries (no window fits in 12 entries)
    loss = [9.5, 10.4, 10.6, 10.1, 10.2, 9.2, 8.2, 7.7, 7.8, 8.0, 9.7, 9.9]
    d = diagnose(_frame(loss))
    assert d.run_class == "diverged" and d.spikes["start_step"].tolist() == [11] and d.spikes["at_end"].all()
    assert diagnose(_frame(loss[:-2] + [8.1, 7.9])).run_class == "stable"


def test_loss_zero_with_a_nan_grad_norm_is_a_nan_loss():
    d = diagnose(_frame(np.zeros(10), grad_norm=np.full(10, np.nan), lr=np.full(10, 5e-5)))
    assert d.run_class == "diverged" and any("loss 0.0 with grad_norm NaN/inf at 10 entries" in n for n in d.notes)
    ok = diagnose(_frame(np.r_[np.linspace(0.5, 0.01, 20), np.zeros(5)], grad_norm=np.full(25, 0.1)))
    assert ok.run_class == "stable"  # a loss trained to 0 with a finite gradient stays a loss
