"""analysis.diagnosis: known answers on constructed series, the five real HF logs, the report and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import add_diagnose_arguments
from analysis.diagnosis import SNIPPET, diagnose
from analysis.diagnosis.cli import main_diagnose
from analysis.diagnosis.report import fig_loss, write_diagnosis_report
from analysis.logs import LogError, load_log
from gradvar.spikes import SpikeRule

REAL = Path(__file__).resolve().parents[1] / "data" / "real_logs"


def real(name: str) -> Path:
    hits = sorted(REAL.glob(f"*{name}*trainer_state.json"))
    if not hits:
        pytest.skip(f"real logs not found under {REAL}")
    return hits[0]


def planted(n=400, at=(100, 160, 220, 280, 340), interval=10, seed=0) -> pd.DataFrame:
    """A decaying loss with one-entry spikes at `at`; adam_v_max rises 5 entries before each, update_rms is noise."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    loss = 2.0 + 3.0 * np.exp(-i / 60) + rng.normal(0, 0.01, n)
    lead = 1.0 + rng.normal(0, 0.02, n)
    for k in at:
        loss[k] *= 1.8
        lead[k - 5 : k + 1] = 3.0
    return pd.DataFrame(
        {
            "step": (i + 1) * interval,
            "loss": loss,
            "adam_v_max": lead,
            "update_rms": 1.0 + rng.normal(0, 0.02, n),
            "lr": np.linspace(3e-4, 3e-5, n),
        }
    )


# --- constructed series with known answers --------------------------------------------------------------------


def test_planted_spikes_found_at_exact_steps():
    d = diagnose(planted())
    steps = [10 * (k + 1) for k in (100, 160, 220, 280, 340)]
    assert d.spikes["start_step"].tolist() == steps and d.spikes["end_step"].tolist() == steps
    assert (d.spikes["kind"] == "spike").all() and d.run_class == "spiky"
    assert d.spikes["peak_ratio"].min() > 1.6  # x1.8 against the median of the previous entries, above a falling loss


def test_planted_leading_signal_ranked_first_with_lead_5():
    d = diagnose(planted())
    top = d.signals.iloc[0]
    assert top["signal"] == "adam_v_max" and top["role"] == "measured"
    assert top["median_lead_entries"] == 5 and top["median_lead_steps"] == 50  # logged every 10 steps
    assert top["hit_rate"] == 1.0 and top["auroc"] > 0.7 and top["p_value"] < 0.05
    noise = d.signals.set_index("signal").loc["update_rms"]
    assert noise["auroc"] < top["auroc"]
    assert d.signals.set_index("signal").loc["lr", "role"] == "schedule"
    assert any("Best early warning: adam_v_max" in a for a in d.advice)


def test_nan_loss_is_a_divergence_event():
    df = planted(at=(100,))
    df.loc[300:, "loss"] = np.nan
    d = diagnose(df)
    last = d.spikes.iloc[-1]
    assert last["kind"] == "nonfinite" and last["start_step"] == 3010 and bool(last["at_end"])
    assert d.run_class == "diverged" and "NaN/inf at step 3010" in d.advice[0]


def test_rise_that_never_recovers_is_divergence():
    df = planted(at=())
    df.loc[300:, "loss"] = 7.0 + np.random.default_rng(1).normal(0, 0.05, 100)
    d = diagnose(df)
    assert d.run_class == "diverged"
    ev = d.spikes.iloc[-1]
    assert ev["kind"] == "sustained_rise" and ev["start_step"] == 3010 and bool(ev["at_end"])


def test_sustained_rise_in_the_middle_is_one_event():
    rng = np.random.default_rng(2)
    loss = 3.0 + rng.normal(0, 0.02, 300)
    loss[150:180] = 4.5 + rng.normal(0, 0.02, 30)
    d = diagnose(pd.DataFrame({"step": np.arange(1, 301), "loss": loss}))
    assert len(d.spikes) == 1
    ev = d.spikes.iloc[0]
    assert ev["kind"] == "sustained_rise" and 148 <= ev["start_step"] <= 152 and 178 <= ev["end_step"] <= 182
    assert d.run_class == "spiky" and any(a.startswith("Sustained rise") for a in d.advice)


def test_smooth_run_is_stable_and_ratio_threshold_is_used():
    i = np.arange(200)
    df = pd.DataFrame({"step": i + 1, "loss": 3 + np.exp(-i / 50)})
    df.loc[100, "loss"] *= 1.3
    assert diagnose(df, rule=SpikeRule(ratio_threshold=1.5)).run_class == "stable"
    assert diagnose(df).run_class == "spiky"


def test_negative_losses_fall_back_to_the_z_rule_and_zero_losses_do_not():
    d = diagnose(pd.DataFrame({"step": np.arange(1, 101), "loss": np.linspace(1, -1, 100)}))
    assert d.run_class in ("stable", "spiky") and any("negative" in n for n in d.notes)
    loss = np.r_[np.linspace(1, 0, 50), np.zeros(50)]
    loss[70] = 0.5  # a collapse to exactly 0, then a spike: an infinite ratio over the floor
    d = diagnose(pd.DataFrame({"step": np.arange(1, 101), "loss": loss}))
    assert d.spikes["peak_step"].tolist() == [71] and d.spikes["peak_ratio"].item() == np.inf


def test_early_spikes_at_high_lr_get_slw_and_clipping_advice():
    n, warm = 2000, 100
    i = np.arange(n)
    lr = np.where(i < warm, 6e-4 * (i + 1) / warm, 6e-4 * 0.5 * (1 + np.cos(np.pi * (i - warm) / (n - warm))))
    rng = np.random.default_rng(3)
    loss = 3 + 7 * np.exp(-i / 150) + rng.normal(0, 0.01, n)
    grad = 1 + rng.normal(0, 0.03, n)
    for k in (150, 200, 260):
        loss[k] *= 1.5
        grad[k] *= 6  # the gradient blows up with the loss: an optimizer instability, not a bad batch
    d = diagnose(pd.DataFrame({"step": i + 1, "loss": loss, "grad_norm": grad, "lr": lr}))
    assert d.spikes["peak_step"].tolist() == [151, 201, 261]
    slw = next(a for a in d.advice if "Sequence Length Warmup" in a)
    assert "start at length 8 (64 for billion-parameter models)" in slw and "try T = 200, 400 and 800" in slw
    assert any("Clip gradients at 1.0" in a for a in d.advice)
    assert d.facts["warmup_end_step"] == 100 and d.facts["warmup_visible"]


# --- the five real logs ---------------------------------------------------------------------------------------


def test_geollm_excursion_under_the_floor_is_named_not_counted():
    d = diagnose(real("GeoLLM"))
    assert d.run_class == "stable" and not len(d.spikes) and d.facts["loss_decimals"] == 4
    assert 800 <= d.facts["sub_floor_rise"]["peak_step"] <= 1100  # x2.9 of its level, +0.02 nats
    assert any("near zero" in a for a in d.advice) and any("under the 0.05-nat floor" in a for a in d.advice)


def test_kg_llm_nan_grad_norms_noted():
    d = diagnose(real("KG-LLM"))
    assert d.facts["nan_grad_steps"] == [1, 2, 6] and d.run_class == "stable"
    assert any("GradScaler" in a and "(1, 2, 6)" in a for a in d.advice)
    assert any("clipping" in a for a in d.advice) and not any("Sequence Length Warmup" in a for a in d.advice)


def test_tinyllama_is_stable():
    d = diagnose(real("tinyLlama"))
    assert d.run_class == "stable" and d.spikes.empty
    assert any(a.startswith("No loss events") for a in d.advice)


def test_kevin_batch_one_noise_is_no_event():
    d = diagnose(real("kevin"))
    assert d.run_class == "stable" and not len(d.spikes)  # ratios of 1.2-1.32 inside a 1.92-2.54 noise band
    assert not any("Sequence Length Warmup" in a for a in d.advice)


def test_whisper_near_zero_noise_handled():
    d = diagnose(real("whisper"))
    assert d.facts["near_zero"] and d.run_class == "stable"
    advice = " ".join(d.advice)
    assert "eval_wer improved" in advice and "Sequence Length Warmup" not in advice
    assert "every 100 steps" in advice


def test_report_files_and_html_escaping(tmp_path):
    src = tmp_path / "run <b>&.csv"
    planted().to_csv(src, index=False)
    log = load_log(src)
    d = diagnose(log)
    md = write_diagnosis_report(d, log, tmp_path / "out")
    out = md.parent
    assert md.name == "report.md" and (out / "loss.png").stat().st_size > 1000 and (out / "signals.png").exists()
    text = md.read_text()
    assert "## Spike events" in text and SNIPPET in text and "GradvarCallback" in text
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<b>" not in page and "run &lt;b&gt;&amp;.csv" in page
    assert pd.read_csv(out / "spikes.csv")["start_step"].tolist() == d.spikes["start_step"].tolist()


def test_fig_loss_returns_a_figure_without_pyplot():
    import matplotlib.pyplot as plt

    d = diagnose(planted())
    before = plt.get_fignums()
    fig = fig_loss(d.entries, d.spikes, title="a $weird_title")
    fig.savefig(__import__("io").BytesIO(), format="png")
    assert fig.axes and plt.get_fignums() == before


# --- CLI ------------------------------------------------------------------------------------------------------


def args(*argv):
    return add_diagnose_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_cli_prints_summary_and_writes_report(tmp_path, capsys):
    assert main_diagnose(args(str(REAL / "megatron_bigscience_gpt2_ds-off.out"), "-o", str(tmp_path / "r"))) == 0
    out = capsys.readouterr().out
    assert "Spike events (2)" in out and "mon.step(loss=loss)" in out and "Advice:" in out
    assert (tmp_path / "r" / "report.html").exists()


def test_cli_json(capsys):
    assert main_diagnose(args(str(real("tinyLlama")), "--json")) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["run_class"] == "stable" and d["spikes"] == [] and d["snippet"] == SNIPPET


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["missing.csv"], "missing.csv: no such file"),
        (["bad.csv"], "bad.csv: non-numeric loss"),
        (["good.csv", "--ratio-threshold", "0.5"], "ratio_threshold must be > 1"),
        (["good.csv", "--horizon", "0"], "--horizon must be >= 1"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("step,loss\n1,x\n")
    (tmp_path / "good.csv").write_text("step,loss\n1,2\n2,1\n")
    assert main_diagnose(args(*argv)) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradvar diagnose: error: ") and needle in lines[0]
    assert cap.out == "" and "Traceback" not in cap.err


def test_log_error_from_diagnose_for_bad_objects():
    with pytest.raises(LogError):
        diagnose(42)


def test_record_more_only_when_the_log_lacks_signals(tmp_path, capsys):
    """A log without gradvar's signals is told how to record them; a gradvar run is not, only why its
    gradient-noise columns are empty when it had one micro-batch per step."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import gradvar

    sparse = tmp_path / "sparse.csv"
    planted().to_csv(sparse, index=False)
    assert main_diagnose(args(str(sparse))) == 0
    out = capsys.readouterr().out
    assert "Record more next time" in out and "Record next time (import gradvar):" in out
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for micro in (2, 4):  # K=2, then K=1
        with gradvar.Monitor(model, opt, tmp_path / f"run{micro}", "paper") as mon:
            for _ in range(12):
                for x in torch.randint(0, 32, (4, 16)).split(micro):
                    (model(input_ids=x, labels=x).loss * micro / 4).backward()
                opt.step()
                opt.zero_grad()
                mon.step()
        assert main_diagnose(args(str(tmp_path / f"run{micro}"))) == 0
        out = capsys.readouterr().out
        assert "Record more next time" not in out and "Record next time" not in out
        assert ("need K >= 2 micro-batches" in out) == (micro == 4)
