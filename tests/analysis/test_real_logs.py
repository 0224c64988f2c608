"""`diagnose` on the real public logs of tests/data/real_logs, against the class and events written in its
README from the raw-loss plots before the detectors were tuned."""

import json
from pathlib import Path

import numpy as np
import pytest

from analysis import diagnose
from analysis.logs import load_log

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"

# file -> kind, class, major events as [first step, last step] windows an event must overlap; written in the
# README from the raw-loss plots before the detectors were tuned (benchmarks/ reads the same file)
EXPECTED = {
    name: (e["kind"], e["class"], [tuple(w) for w in e["events"]])
    for name, e in json.loads((DATA / "expected.json").read_text()).items()
}
SCRATCH_ONLY = ("Sequence Length Warmup",)
"""Advice that holds for pre-training from scratch only: it contradicts a fine-tune."""


@pytest.fixture(scope="module")
def results():
    return {name: diagnose(DATA / name) for name in EXPECTED}


def test_every_log_is_in_the_test_set():
    assert sorted(p.name for p in DATA.iterdir() if p.name not in ("README.md", "expected.json")) == sorted(EXPECTED)


def test_class_right_for_at_least_all_but_one(results):
    wrong = {n: d.run_class for n, d in results.items() if d.run_class != EXPECTED[n][1]}
    assert len(wrong) <= max(1, len(EXPECTED) // 12), wrong


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_major_events_named_and_few_others(results, name):
    sp = results[name].spikes
    windows = EXPECTED[name][2]
    for a, b in windows:
        assert ((sp["start_step"] <= b) & (sp["end_step"] >= a)).any(), (name, (a, b), sp)
    other = [r for r in sp.itertuples() if not any(r.start_step <= b and r.end_step >= a for a, b in windows)]
    assert len(other) <= 3, (name, other)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_advice_fits_the_run_kind(results, name):
    d = results[name]
    kind = d.facts["run_kind"]["kind"]
    assert kind in (EXPECTED[name][0], "unknown"), (name, d.facts["run_kind"])
    if EXPECTED[name][0] == "fine_tune":
        assert not any(w in a for a in d.advice for w in SCRATCH_ONLY), (name, d.advice)


def test_kinds_named_with_their_evidence(results):
    known = [n for n, d in results.items() if d.facts["run_kind"]["kind"] != "unknown"]
    assert len(known) >= 11
    for n in known:
        assert results[n].facts["run_kind"]["evidence"] and "Kind: " in results[n].summary


def test_megatron_divergence_named_with_its_evidence(results):
    d = results["megatron_bigscience_gpt2_ds-off.out"]
    first, last = d.spikes.iloc[0], d.spikes.iloc[-1]
    assert first["start_step"] == 3 and first["peak_step"] == 4 and first["peak_loss"] == pytest.approx(48.14127)
    assert first["ref_loss"] == pytest.approx(12.44238, rel=1e-3) and bool(last["at_end"])
    assert d.summary.index("step 4") < d.summary.index("step 62")  # the largest event leads
    slw = [a for a in d.advice if "Sequence Length Warmup" in a]
    assert slw and "from scratch" in slw[0] and "step 3" in slw[0]


def test_geollm_floor_named(results):
    d = results["AriesChen-UPC__GeoLLM__trainer_state.json"]
    sub = d.facts["sub_floor_rise"]
    assert sub is not None and 800 <= sub["peak_step"] <= 1100 and sub["rise"] < 0.05 < sub["ratio"]
    assert any("under the 0.05-nat floor" in a for a in d.advice)


def test_kg_llm_init_grad_spike_gets_no_slw_advice(results):
    d = results["ChenguangYang96UCR__KG-LLM__trainer_state.json"]
    assert d.facts["nan_grad_steps"] == [1, 2, 6]
    assert any("GradScaler" in a for a in d.advice)
    assert not any("Sequence Length Warmup" in a for a in d.advice)


def test_resume_spike_blamed_on_the_resume(tmp_path):
    # A LLaMA-Factory log that resumed at step 510 (its steps 510-520 written twice), a loss jump and a
    # grad-norm jump on the first step after the resume: constructed, the rest of the log is ordinary noise.
    rng = np.random.default_rng(0)
    rows = []
    for step in list(range(1, 521)) + list(range(510, 801)):
        resumed = len(rows) >= 520
        loss = 1.2 + 0.02 * rng.normal() + (1.5 if resumed and step == 510 else 0.0)
        g = 0.8 + 0.05 * rng.normal() + (20.0 if resumed and step == 510 else 0.0)
        rows.append(json.dumps({"current_steps": step, "total_steps": 800, "loss": loss, "grad_norm": g, "lr": 1e-5}))
    f = tmp_path / "trainer_log.jsonl"
    f.write_text("\n".join(rows) + "\n")
    d = diagnose(f)
    assert d.facts["resume_steps"] == [510] and d.spikes["start_step"].tolist() == [510]
    resume = [a for a in d.advice if "resume at step 510" in a]
    assert resume and "optimizer state" in resume[0] and "data position not restored" in resume[0]
    assert "grad_norm 26x" in resume[0] and "not the learning rate" in resume[0]
    assert d.advice[0] == resume[0] and not any("Sequence Length Warmup" in a for a in d.advice)
    assert "grad_norm at the largest event: 26" in d.summary


def test_tr8b_resume_spike_advice_is_conditional_on_the_late_first_step(results):
    d = results["megatron_bigscience_tr8b_resume_spike.txt"]
    log = load_log(DATA / "megatron_bigscience_tr8b_resume_spike.txt")  # the OVERFLOW! lines are not entries
    assert log.df["step"].tolist() == list(range(17060, 17069)) and log.df["loss"].iloc[2] == 4.374269
    assert log.df["loss_scale"].iloc[-1] == 32768.0 and "resume_steps" not in log.meta
    assert d.facts["late_start_step"] == 17060 and d.spikes["start_step"].tolist() == [17062]
    late = d.advice[0]
    assert late.startswith("This log starts at step 17060") and "If the run resumed at step 17060" in late
    assert "step counter" in late and "comes 2 steps after" in late and "marks no resume" in late
    assert not any(a.startswith("The event at step") and "resume at step" in a for a in d.advice)


def test_late_start_advice_only_for_an_event_just_after_the_first_step(tmp_path):
    # Constructed console logs: from step 5000 with a jump 3 entries in (advised) or 60 entries in (not); from
    # step 1 with the same early jump (not: that log starts at the run's start).
    rng = np.random.default_rng(1)

    def run(first, jump_at):
        steps = range(first, first + 100)
        loss = [3.0 + 0.01 * rng.normal() + (1.0 if s >= jump_at else 0.0) for s in steps]
        f = tmp_path / f"log_{first}_{jump_at}.txt"
        f.write_text("".join(f"step {s} | loss {v:.4f}\n" for s, v in zip(steps, loss)))
        return diagnose(f)

    early, later, start = run(5000, 5003), run(5000, 5060), run(1, 4)
    assert early.facts["late_start_step"] == 5000 and early.spikes["start_step"].iloc[0] == 5003
    assert any("If the run resumed at step 5000" in a for a in early.advice)
    assert later.facts["late_start_step"] == 5000 and later.spikes["start_step"].iloc[0] == 5060
    assert not any("starts at step" in a for a in later.advice)
    assert start.facts["late_start_step"] is None and not any("starts at step" in a for a in start.advice)


def test_bias_correction_factor_in_the_resume_advice_matches_torch_adam():
    # A constant gradient for 500 steps, then the step counter reset with the moments kept: torch's own update.
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.95), eps=1e-12)
    for _ in range(501):
        before = p.detach().clone()
        p.grad = torch.ones(1)
        opt.step()
    steady = float((p.detach() - before).abs())
    opt.state[p]["step"].zero_()
    before = p.detach().clone()
    p.grad = torch.ones(1)
    opt.step()
    factor = float((p.detach() - before).abs()) / steady
    from analysis.diagnosis.advice import RESUME_CAUSE

    assert f"{factor:.2f}x for betas (0.9, 0.95)" in RESUME_CAUSE and factor == pytest.approx(10 / 20**0.5, rel=1e-4)


def test_console_readers_on_the_pasted_and_committed_logs():
    nano = load_log(DATA / "nanogpt_issue215_fp16_nan.txt")  # '> ' quote marks and date-time stamps
    assert nano.fmt == "stdout" and nano.df["step"].tolist() == list(range(2920, 3070, 10))
    assert np.isnan(nano.df["loss"]).sum() == 6 and nano.df["loss"].iloc[8] == 4.2490
    assert nano.eval_df["val_loss"].tolist() == [4.0427]
    lit = load_log(DATA / "litgpt_issue628_codellama_full.txt")  # 'iter N step M:' keeps the iteration
    assert lit.df["step"].tolist() == list(range(1151, 1160)) and lit.df["loss"].iloc[1] == 11.4630
    mn = load_log(DATA / "moddednanogpt_valueembed_00008ea0.txt")  # 'step:N/M train_loss:X' tokens
    assert len(mn.df) == 1530 and mn.df.set_index("step").loc[946, "loss"] == 5.0685
    assert "train_time" in mn.df and len(mn.eval_df) == 14 and mn.eval_df["val_loss"].iloc[-1] == 3.2751
    mlx = load_log(DATA / "mlx_lora_issue620.txt")
    assert mlx.df["loss"].tolist()[:3] == [1.593, 1.406, 3.316] and (mlx.df["lr"] == 7e-5).all()
    assert mlx.eval_df["val_loss"].tolist() == [2.086]
    assert len(load_log(DATA / "deeplab_issue5_checkpoint_spike.txt").df) == 30


def test_a_loss_that_is_never_finite_is_a_diverged_run_not_a_read_error(results):
    log = load_log(DATA / "llmc_anthonix_issue2_nan.txt")
    assert len(log.df) == 11 and "the loss is NaN/inf in all 11 rows" in log.notes
    d = results["llmc_anthonix_issue2_nan.txt"]
    assert d.run_class == "diverged" and d.spikes["kind"].tolist() == ["nonfinite"]
    assert "from the first logged entry (step 10)" in d.advice[0] and "never finite" in d.advice[0]
    assert not any("LR halved" in a for a in d.advice)


def test_new_logs_events_and_their_words(results):
    nano = results["nanogpt_issue215_fp16_nan.txt"]
    assert nano.facts["run_kind"]["kind"] == "unknown"  # the log starts at iteration 2920: no first-loss evidence
    assert "NaN/inf at step 3010" in nano.advice[0]
    lit = results["litgpt_issue628_codellama_full.txt"].spikes.iloc[0]
    assert (lit["start_step"], lit["ref_loss"], bool(lit["at_end"])) == (1152, 1.7019, True)
    mlx = results["mlx_lora_issue620.txt"]
    assert "from step 75 and had not come back by the last entry (step 200)" in mlx.advice[0]
    deeplab = results["deeplab_issue5_checkpoint_spike.txt"].spikes
    spike = deeplab[deeplab["peak_step"] == 13000].iloc[0]
    assert (spike["kind"], spike["start_step"], spike["end_step"], bool(spike["at_end"])) == (
        "spike",
        13000,
        13000,
        False,
    )
    mn = results["moddednanogpt_valueembed_00008ea0.txt"].spikes
    assert mn["peak_step"].tolist() == [918, 946] and (mn["n_entries"] == 1).all()
