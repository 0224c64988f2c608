"""What `gradvar diagnose` reads, in words: the command's --help and the one-line error for an unreadable file
say the same thing. Plain strings, so --help imports no pandas."""

FORMATS_READ = (
    "gradvar run directories",
    "HF trainer_state.json, checkpoint and runs/ folders",
    "HF Trainer console output ({'loss': ...} lines, tqdm bars and all)",
    "TensorBoard event files",
    "LLaMA-Factory trainer_log.jsonl",
    "Lightning metrics.csv",
    "W&B CSV exports",
    "CSV/TSV/JSONL with step and loss columns",
    "build-nanogpt log.txt",
    "console output of nanoGPT, minGPT and char-level trainers, llm.c, litgpt, mlx_lm, modded-nanogpt, Megatron-LM",
    "PyTorch examples ('| epoch 1 | 200/2983 batches | ... | loss 7.63 |')",
    "fairseq ('| epoch 001: 100 / 1975 loss=12.8, ... num_updates=100')",
    "DeepSpeed consoles ('[Rank 0]' prefixes)",
    "key=value and key: value lines",
    "any other console line with a step-like counter and a loss-like value (OpenNMT, Keras, speech trainers, ...)",
)

CSV_HINT = "a two-column CSV always works: a 'step,loss' header line, then one '100,2.31' line per logged step"


def formats_sentence() -> str:
    """The formats read, as one sentence for a one-line error message."""
    return "formats read: " + "; ".join(FORMATS_READ)
