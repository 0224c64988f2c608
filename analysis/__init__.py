"""Offline analysis of training runs: gradvar run directories and users' own logs (CSV, JSONL, HF, TensorBoard)."""
