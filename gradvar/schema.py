"""The records' column contract. Add columns freely; rename none (analysis and users rely on them)."""

SCHEMA_VERSION = 1

KEY = ("step", "tokens", "seqlen")

STEPS = (
    "step",
    "tokens",
    "seqlen",
    "batch_size",
    "lr",
    "loss",
    "loss_max",
    "loss_ratio",
    "spike_ratio",
    "spike_z",
    "grad_norm",
    "grad_trace_sigma",
    "grad_true_sq",
    "grad_noise_scale",
    "grad_var_max",
    "grad_var_sum",
    "adam_v_max",
    "adam_v_l1",
    "adam_v_min",
    "adam_m_norm",
    "update_rms",
    "nonfinite_loss",
    "nonfinite_grad",
    "time_s",
    "tokens_per_s",
)
"""The column contract (docs/records.md defines each column); the monitor writes these and may add more (see
STEPS_EXTRA)."""

STEPS_EXTRA = (
    "loss_z",
    "grad_norm_clipped",
    "grad_sq_micro",
    "micro_batches",
    "adam_v_mean",
    "adam_vhat_max",
    "adam_vhat_l1",
    "probe_loss",
    "probe_loss_ratio",
    "max_attn_logit",
    "max_output_logit",
    "world_size",
)

LAYERS = ("step", "tokens", "seqlen", "group", "stat", "value")
PROBES = (
    "step",
    "tokens",
    "seqlen",
    "probe_seqlen",
    "probe_tokens",
    "loss",
    "grad_norm",
    "grad_trace_sigma",
    "grad_trace_sigma_per_token",
    "grad_true_sq",
    "grad_noise_scale",
    "grad_sq_max",
    "grad_sq_max_micro",
)
EVENTS = ("step", "tokens", "seqlen", "kind", "value", "message")
RANKS = ("step", "tokens", "seqlen", "rank", "loss", "grad_sq_micro_local")
EVALS = ("step", "tokens", "seqlen", "val_loss", "val_ppl", "time_s")

TABLES = {"steps": STEPS, "layers": LAYERS, "probes": PROBES, "events": EVENTS, "ranks": RANKS, "evals": EVALS}

# Rows that identify one record: a later write of the same key replaces the earlier (resume, compaction).
TABLE_KEYS = {
    "steps": ("step",),
    "layers": ("step", "group", "stat"),
    "probes": ("step", "probe_seqlen"),
    "events": None,  # several per step: duplicates are dropped whole
    "ranks": ("step", "rank"),
    "evals": ("step",),
}
