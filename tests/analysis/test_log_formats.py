"""Each log reader on a real public sample (tests/data/real_logs, sources in its README)."""

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.logs import load_log

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"


def test_llamafactory_jsonl_merges_per_rank_copies():
    path = DATA / "llamafactory_sft-ranks_trainer_log.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    log = load_log(path)
    assert log.fmt == "llamafactory"
    assert len(raw) == 600 and len(log.df) == 300  # every step written by two ranks
    assert log.df["step"].tolist() == list(range(10, 3001, 10))
    at_970 = [r["loss"] for r in raw if r["current_steps"] == 970]
    assert at_970 == [0.537, 0.5369]
    assert log.df.loc[log.df["step"] == 970, "loss"].item() == pytest.approx(np.mean(at_970))
    assert "percentage" not in log.df and "total_steps" not in log.df  # progress, not metrics
    assert any("once per rank" in n for n in log.notes) and "resume_steps" not in log.meta


def test_llamafactory_eval_rows_and_resume(tmp_path):
    log = load_log(DATA / "llamafactory_qwen-medical_trainer_log.jsonl")
    assert log.fmt == "llamafactory" and len(log.df) == 675
    assert log.eval_df is not None and "eval_loss" in log.eval_df and len(log.eval_df) == 14
    # A resume: the run restarts at step 30 after step 50; the rows written after the resume win.
    lines = (DATA / "llamafactory_360-grpo_trainer_log.jsonl").read_text().splitlines()
    resumed = tmp_path / "trainer_log.jsonl"
    resumed.write_text("\n".join(lines[:50] + lines[29:60]) + "\n")
    log = load_log(resumed)
    assert log.meta["resume_steps"] == [30] and log.df["step"].tolist() == list(range(1, 61))


def test_hf_runs_folder_with_run_name_prefix(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    state = json.loads((DATA / "hf_mistral-translator_trainer_state.json").read_text())
    rows = [r for r in state["log_history"] if "loss" in r][:50]
    # The HF Trainer's TensorBoard layout: runs/<date_host>/events..., tags train/loss, train/grad_norm, ...
    for run, sl in (("Oct25_09-00-00_host", rows[:10]), ("Oct26_10-11-12_host", rows)):
        w = tb.SummaryWriter(str(tmp_path / "runs" / run))
        for r in sl:
            for k in ("loss", "grad_norm", "learning_rate"):
                w.add_scalar(f"train/{k}", r[k], r["step"])
        w.close()
    log = load_log(tmp_path / "runs")
    assert log.fmt == "tensorboard" and len(log.df) == 50
    assert {"loss", "grad_norm", "lr"} <= set(log.df.columns)
    assert np.allclose(log.df["loss"], [r["loss"] for r in rows], rtol=1e-6)
    assert any("read the newest, Oct26_10-11-12_host" in n for n in log.notes)


def test_megatron_tensorboard_tags(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    log_txt = load_log(DATA / "megatron_bigscience_gpt2_ds-off.out")
    w = tb.SummaryWriter(str(tmp_path / "tb"))
    for _, r in log_txt.df.iterrows():  # Megatron's own tag names, and its 'vs samples' copies
        it = int(r["step"])
        w.add_scalar("lm loss", r["loss"], it)
        w.add_scalar("lm loss vs samples", r["loss"], it * 1024)
        w.add_scalar("grad-norm", r["grad_norm"], it)
        w.add_scalar("loss-scale", r["loss_scale"], it)
        w.add_scalar("learning-rate", r["lr"], it)
    w.close()
    log = load_log(tmp_path / "tb")
    assert log.df["step"].tolist() == list(range(1, 63))
    assert {"loss", "grad_norm", "lr", "loss_scale"} <= set(log.df.columns)
    assert np.allclose(log.df["loss"], log_txt.df["loss"], rtol=1e-6)


def test_build_nanogpt_log_txt():
    log = load_log(DATA / "buildnanogpt_agndm_log.txt")
    assert log.fmt == "nanogpt_logtxt" and log.df["step"].tolist() == list(range(95))
    assert log.df["loss"].iloc[0] == 10.934416 and log.df["loss"].iloc[-1] == 7.321465
    assert log.eval_df["val_loss"].tolist() == [10.931] and log.eval_df["val_hella"].tolist() == [0.2413]


@pytest.mark.parametrize(
    "name, n, first, cols",
    [
        ("megatron_bigscience_gpt2_ds-off.out", 62, 12.44238, {"grad_norm", "lr", "loss_scale", "global_batch_size"}),
        ("buildnanogpt_stdout_shakespeare.txt", 26, 10.9677, {"grad_norm", "lr"}),
        ("llmc_readme_stdout.txt", 5, 5.356189, set()),
    ],
)
def test_console_output(name, n, first, cols):
    log = load_log(DATA / name)
    assert log.fmt == "stdout" and len(log.df) == n and log.df["loss"].iloc[0] == pytest.approx(first)
    assert cols <= set(log.df.columns)


def test_console_output_nanogpt_and_llmc_cuda_lines(tmp_path):
    # nanoGPT's and llm.c's (train_gpt2.cu) line layouts, values from the console logs quoted in nanoGPT-based
    # and llm.c-based repositories; nanoGPT's eval lines go to the eval table.
    f = tmp_path / "out.txt"
    f.write_text(
        "iter 90: loss 2.5483, time 1825.68ms, mfu 0.22%\n"
        "step 100: train loss 2.4989, val loss 2.5072\n"
        "saving checkpoint to out-shakespeare-char\n"
        "iter 100: loss 2.5311, time 44996.39ms, mfu 0.19%\n"
        "iter 110: loss nan, time 440.71ms, mfu 48.31%\n"
    )
    log = load_log(f)
    assert log.df["step"].tolist() == [90, 100, 110] and np.isnan(log.df["loss"].iloc[2])
    assert log.df["time"].tolist() == [1825.68, 44996.39, 440.71]
    assert log.eval_df["val_loss"].tolist() == [2.5072]
    g = tmp_path / "llmc.txt"
    g.write_text(
        "step    1/32000 | loss 11.133732 (+nanz)| norm 52.9732 (+nanz)| lr 8.57e-07 | 3056.36 ms | 42.6% bf16 "
        "MFU | 343080 tok/s\nstep    2/32000 | loss 10.539388 (+nanz)| norm 43.5996 (+nanz)| lr 1.71e-06 | "
        "2747.19 ms | 47.4% bf16 MFU | 381690 tok/s\n"
    )
    log = load_log(g)
    assert log.df["loss"].tolist() == [11.133732, 10.539388] and log.df["grad_norm"].tolist() == [52.9732, 43.5996]
    assert log.df["lr"].tolist() == [8.57e-07, 1.71e-06]


# Pasted console output read as found (tqdm bars, warnings, blank lines, the pasters' notes left in): reader,
# entries, first and last step, first loss, columns, and where the steps came from.
PASTED = [
    ("hf_console_llava_issue918_tqdm.txt", "hf_console", 6, 2564, 2569, 0.6623, {"lr", "epoch"}, "tqdm bar"),
    ("hf_console_timemoe_issue71_tqdm.txt", "hf_console", 9, 1, 9, 0.1474, {"grad_norm", "lr", "epoch"}, "order"),
    ("hf_console_timemoe_issue37_warnings.txt", "hf_console", 7, 1, 7, 0.5356, {"grad_norm", "lr"}, "order"),
    ("hf_console_unsloth_issue5207_gradspike.txt", "hf_console", 9, 1, 9, 1.46, {"grad_norm"}, "order"),
    ("pytorch_example_mos_issue12.txt", "console", 9, 24 * 1106 + 800, 26 * 1106 + 400, 4.02, {"lr", "ppl"}, "epoch"),
    ("fairseq_issue41_exploding.txt", "console", 7, 1000, 7000, 9.57, {"grad_norm", "lr", "wps"}, "batches"),
    ("fairseq_issue940_train_inner.txt", "console", 5, 445, 645, 11.521, {"nll_loss", "grad_norm"}, "num_updates"),
    ("fairseq_apollo_issue4_train_inner.txt", "console", 5, 100, 500, 12.834, {"grad_norm", "lr"}, "num_updates"),
    ("deepspeed_gptneox_issue947_bf16.txt", "console", 2, 1, 2, 2.276005, {"lr", "loss_scale"}, "iteration"),
    ("keyvalue_gradnorm_tf_issue17_nan.txt", "console", 17, 3442, 3458, 0.2105546216666698, {"epoch"}, "epoch"),
    ("keyvalue_wav2letter_issue220_inf.txt", "console", 3, 82, 84, 0.78993, {"lr", "train_ter"}, "epoch"),
    ("charlevel_storch_issue51.txt", "stdout", 9, 0, 4000, 4.335848, set(), None),
]


@pytest.mark.parametrize("name, fmt, n, first_step, last_step, first, cols, how", PASTED, ids=[p[0] for p in PASTED])
def test_pasted_console_formats(name, fmt, n, first_step, last_step, first, cols, how):
    log = load_log(DATA / name)
    assert (log.fmt, len(log.df), log.df["step"].iloc[0], log.df["step"].iloc[-1]) == (fmt, n, first_step, last_step)
    assert log.df["loss"].iloc[0] == pytest.approx(first) and cols <= set(log.df.columns)
    if how:
        assert how in log.meta["steps_from"] and any(how in n for n in log.notes)


def test_hf_console_values_noise_and_eval_dicts(tmp_path):
    llava = load_log(DATA / "hf_console_llava_issue918_tqdm.txt")  # the first dict has no bar: one interval back
    assert llava.df["loss"].tolist() == [0.6623, 0.8022, 4.2653, 0.77, 0.556, 0.8223]
    nan = load_log(DATA / "hf_console_timemoe_issue31_nan.txt")  # 'nan' is no Python literal: read as NaN
    assert (nan.df["loss"] == 0.0).all() and nan.df["grad_norm"].isna().all() and nan.df["epoch"].iloc[-1] == 0.67
    warn = load_log(DATA / "hf_console_timemoe_issue71_tqdm.txt")
    assert np.isnan(warn.df["grad_norm"].iloc[0]) and warn.df["grad_norm"].iloc[1] == pytest.approx(0.18996971845)
    # A bar and a dict glued by '\r', a dict cut by the terminal, newer versions' quoted values, an eval dict
    # and the final summary (not a step); --logging-steps gives the trainer's steps where no bar does.
    f = tmp_path / "paste.txt"
    f.write_text(
        "  5%|▌   | 10/200 [00:09<02:50,  1.1it/s]\r{'loss': '2.31', 'grad_norm': '0.8', 'epoch': '0.05'}\n"
        "{'loss': 2.1, 'learning_rate': 2e-05, 'epoch': 0.1}\n"
        "{'loss': 2.05, 'learning_rate': 2e-05, 'epo 15%|█▌  | 30/200 [00:27<02:33,  1.1it/s]\n"
        "{'eval_loss': 1.9, 'eval_runtime': 3.1, 'epoch': 0.1}\n"
        "{'loss': 1.98, 'learning_rate': 1e-05, 'epoch': 0.2}\n"
        "{'train_runtime': 200.5, 'train_loss': 2.1, 'epoch': 1.0}\n"
    )
    log = load_log(f)
    assert log.df["loss"].tolist() == [2.31, 2.1, 1.98] and log.df["step"].tolist() == [1, 2, 3]
    assert any("1 dict(s) cut off" in n for n in log.notes) and log.eval_df["eval_loss"].tolist() == [1.9]
    assert load_log(f, logging_steps=10).df["step"].tolist() == [10, 20, 30]
    assert load_log(f, logging_steps=10).eval_df["step"].tolist() == [20]


def test_hf_console_steps_from_full_epochs_and_the_trainers_banner(tmp_path):
    # The banner and dict layout of the Trainer (transformers 4.x); 159 steps per epoch, logging every 50.
    banner = (
        "***** Running training *****\n  Num examples = 5,088\n  Num Epochs = 3\n"
        "  Instantaneous batch size per device = 32\n  Total optimization steps = 477\n"
    )
    full = "".join(f"{{'loss': {2 - s / 500}, 'learning_rate': 5e-05, 'epoch': {s / 159!r}}}\n" for s in (50, 100, 150))
    f = tmp_path / "full.txt"
    f.write_text(banner + full)
    log = load_log(f)
    assert log.df["step"].tolist() == [50, 100, 150] and "159 steps per epoch" in log.meta["steps_from"]
    rounded = "".join(f"{{'loss': {2 - s / 500}, 'epoch': {round(s / 159, 2)}}}\n" for s in (50, 100, 150))
    g = tmp_path / "rounded.txt"  # two decimals: 0.31 x 159 = 49.3, no exact step
    g.write_text(banner + rounded)
    assert load_log(g).df["step"].tolist() == [1, 2, 3]


def test_pytorch_example_and_fairseq_eval_lines_and_epochs():
    wlm = load_log(DATA / "pytorch_example_mos_issue12.txt")  # '| end of epoch 25 | ... | valid loss 4.35 |'
    assert wlm.df["loss"].tolist()[:3] == [4.02, 4.05, 4.09] and wlm.eval_df["val_loss"].tolist() == [4.35, 4.35]
    assert wlm.eval_df["step"].tolist() == [24 * 1106 + 1000, 25 * 1106 + 1000]
    fs = load_log(DATA / "fairseq_issue940_train_inner.txt")  # the running average in '(...)' is not a value
    assert fs.eval_df["val_loss"].tolist() == [8.11425] and fs.eval_df["step"].tolist() == [595]
    boom = load_log(DATA / "fairseq_issue41_exploding.txt")
    assert boom.df["loss"].iloc[-1] == pytest.approx(7746569234820.15) and np.isinf(boom.df["grad_norm"].iloc[-1])


def test_deepspeed_rank_lines_without_a_loss_are_not_entries():
    log = load_log(DATA / "deepspeed_gptneox_issue947_bf16.txt")  # '[Rank 0] step=2, skipped=0, lr=[...]'
    assert log.df["step"].tolist() == [1, 2] and log.df["loss"].tolist() == [2.276005, 2.175701]
    assert log.meta["loss_from"] == "lm_loss" and "skipped" not in log.df


def test_lightning_metrics_csv():
    log = load_log(DATA / "lightning_slm_metrics.csv")
    assert log.fmt == "lightning" and len(log.df) == 2814 and log.df["loss"].iloc[0] == pytest.approx(7.62858057)
    assert "val_loss" in log.eval_df and len(log.eval_df) == 20


def test_wandb_csv_export(tmp_path):
    # The layout of a W&B chart's 'Download CSV', filled with a real run's values (the tinyLlama log).
    state = json.loads((DATA / "Dheena731__tinyLlama-finetune__trainer_state.json").read_text())
    rows = [r for r in state["log_history"] if "loss" in r]
    run, other = "brisk-pond-1", "wild-sun-2"
    lines = [f'"Step","{run} - train/loss","{run} - train/loss__MIN","{run} - train/loss__MAX","{other} - train/loss"']
    lines += [f"{r['step']},{r['loss']},{r['loss']},{r['loss']},1.0" for r in rows]
    f = tmp_path / "wandb_export_2025-01-01T00_00_00.000+00_00.csv"
    f.write_text("\n".join(lines) + "\n")
    log = load_log(f)
    assert log.fmt == "wandb" and list(log.df.columns) == ["step", "loss"]
    assert log.df["loss"].tolist() == [r["loss"] for r in rows]
    assert any("2 runs" in n and run in n for n in log.notes)
