"""The generic console reader (analysis.logs.console): public logs whose formats no reader names (OpenNMT,
Keras, char-rnn, speech trainers; sources and expected readings in tests/data/real_logs/README.md), what it
must refuse, and the one line an unreadable file gets."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import add_diagnose_arguments
from analysis.log_formats import CSV_HINT, FORMATS_READ
from analysis.logs import LogError, load_log

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"

GENERIC = [
    # file, entries, first step, last step, first loss, loss read from, steps from
    ("opennmt_issue1072_nan.txt", 9, 5350, 5750, 2.13, "xent", "'step' counter"),
    ("opennmt_issue709_xent.txt", 12, 12850, 13400, 9.46, "xent", "k/N"),
    ("keras_cnn_issue7_nan.txt", 7, 1, 7, 0.6242, "loss", "whole-epoch"),
    ("keras_moire_issue25_batches.txt", 14, 1, 14, 0.6917, "loss", "k/N"),
    ("deepspeech_issue485.txt", 10, 20 * 1930 + 1390, 20 * 1930 + 1399, 2.5681, "loss", "(epoch - 1)"),
    ("rnnt_issue26.txt", 12, 7, 18, 327.358, "loss", "'global_step' counter"),
    ("charrnn_issue215.txt", 26, 228, 1221, 2.47743491, "train_loss", "k/N"),
]


@pytest.mark.parametrize("name, n, first_step, last_step, first, key, how", GENERIC, ids=[g[0] for g in GENERIC])
def test_generic_reader_on_public_logs_no_reader_names(name, n, first_step, last_step, first, key, how):
    log = load_log(DATA / name)
    assert (log.fmt, len(log.df), log.df["step"].iloc[0], log.df["step"].iloc[-1]) == (
        "console",
        n,
        first_step,
        last_step,
    )
    assert log.df["loss"].iloc[0] == pytest.approx(first) and log.meta["loss_from"] == key
    assert how in log.meta["steps_from"] and any("generic console reader" in note for note in log.notes)
    assert log.df["step"].is_monotonic_increasing


def test_generic_reader_values_where_the_noise_is():
    nmt = load_log(DATA / "opennmt_issue1072_nan.txt")  # '[date INFO] Step k/N; ...; xent: nan; ...; 1320/1445 tok/s'
    assert np.isnan(nmt.df["loss"]).sum() == 3 and nmt.df["ppl"].iloc[0] == 8.43 and "lr" in nmt.df
    cut = load_log(DATA / "opennmt_issue709_xent.txt")  # first line cut at 'poch': its fragment is no column
    assert "poch" not in cut.df and cut.df["ppl"].iloc[2] == 42885.19
    keras = load_log(DATA / "keras_cnn_issue7_nan.txt")  # 'Epoch E/M' line, then its summary line
    assert np.isnan(keras.df["loss"].iloc[1:]).all() and keras.eval_df["val_loss"].iloc[0] == 0.5265
    moire = load_log(DATA / "keras_moire_issue25_batches.txt")  # 'ETA: 19:24' is a time, not a value
    assert "eta" not in moire.df and moire.df["accuracy"].iloc[-1] == 0.6652
    speech = load_log(DATA / "deepspeech_issue485.txt")  # 'Loss 2.5681 (10.9521)': the average is not the loss
    assert speech.df["loss"].tolist()[:3] == [2.5681, 4.3603, 3.0738] and speech.df["time"].iloc[0] == 0.690
    rnnt = load_log(DATA / "rnnt_issue26.txt")  # 'Step Time: 1.6160' is not the step
    assert rnnt.df["step_time"].iloc[0] == 1.6160 and rnnt.df["step"].iloc[0] == 7


def test_ranks_writing_the_same_line_carriage_returns_and_stamps(tmp_path):
    f = tmp_path / "train.log"
    f.write_text(
        "[2024-05-01 10:00:00] [INFO] [Rank 0] step=10, loss=2.5, lr=1e-4\n"
        "[2024-05-01 10:00:00] [INFO] [Rank 1] step=10, loss=2.52, lr=1e-4\n"
        "  3%|▎ | 20/600 [00:20<09:40]\r[2024-05-01 10:00:10] [INFO] [Rank 0] step=20, loss=2.25, lr=1e-4\n"
        "[2024-05-01 10:00:10] [INFO] [Rank 1] step=20, loss=2.25, lr=1e-4\n"
        "UserWarning: something about a deprecated argument, 3 times\n"
        "[2024-05-01 10:00:20] [INFO] [Rank 0] step=30, loss=nan, lr=1e-4\n"
    )
    log = load_log(f)
    assert log.df["step"].tolist() == [10, 20, 30] and log.df["loss"].tolist()[:2] == [pytest.approx(2.51), 2.25]
    assert np.isnan(log.df["loss"].iloc[2]) and any("once per rank" in n for n in log.notes)


REFUSED = [
    # What the generic reader must not read as a training log, and the words of its refusal.
    (
        "prose.txt",
        "I trained for 3 epochs and the loss went down.\nThen at epoch 4 it broke, no idea why.\n",
        "unknown",
    ),
    ("timings.csv", "step,time_ms\n1,12.3\n2,12.1\n3,12.4\n", "no loss column (columns found: step, time_ms)"),
    ("accuracy.csv", "epoch,accuracy\n1,0.61\n2,0.72\n", "unknown format"),
    ("timings.txt", "epoch 1 | time 12.3s | tokens/s 5100\nepoch 2 | time 12.1s | tokens/s 5150\n", "unknown"),
    ("accuracy.txt", "Epoch 1: accuracy 0.61, f1 0.55\nEpoch 2: accuracy 0.72, f1 0.66\n", "unknown"),
    ("one.txt", "Some banner\nepoch: 3 loss: 0.25\nbye\n", "only 1 console line"),
    ("loglik.txt", "epoch: 1 loss: -10.2\nepoch: 2 loss: -11.5\nepoch: 3 loss: -12.9\n", "a negative value is not"),
    # a per-epoch batch number printed without its epoch: the counter restarts every 12 lines
    (
        "restarts.txt",
        "".join(f"batch: {b} loss: {3 - e - b / 100}\n" for e in range(3) for b in range(1, 13)),
        "goes back",
    ),
]


@pytest.mark.parametrize("name, text, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_generic_reader_refuses_what_is_not_a_loss_log(tmp_path, name, text, words):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(LogError) as err:
        load_log(f)
    msg = str(err.value)
    assert "\n" not in msg and name in msg and words in msg, msg


def test_an_unreadable_file_gets_one_line_with_the_formats_and_the_csv_that_works(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("Training went badly.\nThe loss was high, then it was NaN.\n")
    with pytest.raises(LogError) as err:
        load_log(f)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}: unknown format")
    assert all(fmt in msg for fmt in FORMATS_READ) and CSV_HINT in msg
    g = tmp_path / "fixed.csv"  # the CSV the message describes reads
    g.write_text("step,loss\n100,2.31\n200,2.20\n")
    assert load_log(g).df["loss"].tolist() == [2.31, 2.20]


def test_diagnose_help_lists_every_format_read():
    text = add_diagnose_arguments(argparse.ArgumentParser(prog="gradvar diagnose")).format_help()
    flat = " ".join(text.split())
    assert all(" ".join(fmt.split()) in flat for fmt in FORMATS_READ) and "step,loss" in flat
    assert "--logging-steps" in flat


def test_mingpt_lines_and_lines_whose_counters_differ(tmp_path):
    # minGPT's trainer prints 'iter_dt 31.53ms; iter 100: train loss 2.41012' (chargpt.py's callback).
    f = tmp_path / "mingpt.txt"
    f.write_text(
        "number of parameters: 2.71M\nrunning on device cuda\niter_dt 0.00ms; iter 0: train loss 4.17420\n"
        "iter_dt 31.53ms; iter 10: train loss 3.41012\niter_dt 30.90ms; iter 20: train loss 3.05511\n"
    )
    log = load_log(f)
    assert log.fmt == "stdout" and log.df["step"].tolist() == [0, 10, 20] and log.df["loss"].iloc[0] == 4.17420
    g = tmp_path / "mixed.txt"  # one line counts epochs, the other steps: no one axis, said so
    g.write_text("epoch: 1 loss: 2.5\nstep=300 loss=2.1\n")
    with pytest.raises(LogError, match="different step-like counters"):
        load_log(g)
    with pytest.raises(LogError, match="logging_steps must be a whole number >= 1"):
        load_log(DATA / "hf_console_timemoe_issue71_tqdm.txt", logging_steps=0)


def test_diagnose_command_takes_logging_steps_and_says_where_steps_came_from(capsys):
    from analysis.diagnosis.cli import main

    assert main([str(DATA / "hf_console_timemoe_issue37_warnings.txt"), "--logging-steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "logging_steps=10" in out and "7 log entries, steps 10-70" in out
    assert main([str(DATA / "hf_console_timemoe_issue37_warnings.txt")]) == 0
    assert "pass --logging-steps N" in " ".join(capsys.readouterr().out.split())
    assert main([str(DATA / "hf_console_timemoe_issue37_warnings.txt"), "--logging-steps", "0"]) == 2
    assert "--logging-steps must be >= 1" in capsys.readouterr().err


def test_a_long_line_of_words_reads_in_linear_time(tmp_path):
    # A pasted paragraph with no number after its words once cost the pair pattern quadratic backtracking
    # (5,000 words: minutes); bounded names and possessive words keep it linear (20,000 words: about a second).
    import time

    f = tmp_path / "paragraph.txt"
    f.write_text(" ".join(["the loss went down slowly."] * 4000) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(LogError, match="unknown format"):
        load_log(f)
    assert time.perf_counter() - t0 < 30
