"""One typed dataclass tree per run. Overridable from the command line (`--optim.lr 6e-4`), validated with
clear errors, saved as config.json beside the records."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot run; the message says which field and why."""


@dataclass
class ModelConfig:
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """Model width."""
    n_positions: int = 512
    """Context length (full sequence length)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals (the paper's GPT-2 used 0.1; 0 on CPU)."""
    tie_embeddings: bool = True
    """Share the token embedding with the output head, as GPT-2 does."""


@dataclass
class DataConfig:
    source: str = "shakespeare"
    """'shakespeare' (the embedded default corpus), a text file or folder, or a nanoGPT-style .bin."""
    tokenizer: str = "bpe8k"
    """'bpe8k' (byte-level BPE, vocab 8192, trained on the corpus), 'bpeN' for another size, or 'gpt2'."""
    val_fraction: float = 0.05
    """Held-out share of the corpus (whole documents, never near-duplicates on both sides)."""
    cache_dir: str = "data_cache"
    """Where the token memmaps are cached."""


@dataclass
class OptimConfig:
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr: float = 3e-4
    """Learning rate at the end of the cosine decay."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    """Decoupled weight decay on 2-D weights (embeddings and matrices); none on biases and norms."""
    clip: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    warmup_steps: int = 20
    """Linear LR warmup, in optimizer steps."""
    batch_size: int = 8
    """Sequences per optimizer step, all ranks together."""
    micro_batch_size: int = 4
    """Sequences per forward/backward on one rank; accumulation = batch / (ranks * micro)."""
    seq_len: int = 512
    """Full training sequence length."""
    train_tokens: int = 2_000_000
    """Token budget: training ends here, and the cosine decays over it."""
    max_steps: int = 0
    """Optional cap on optimizer steps (0: none)."""
    fused: bool = False
    """Use torch's fused AdamW kernel (CUDA or CPU); with it `intervention.nonfinite=skip` needs no host sync."""


@dataclass
class SLWConfig:
    enabled: bool = False
    """Sequence Length Warmup on/off (off is the plain baseline)."""
    schedule_type: str = "fixed_linear"
    min_seqlen: int = 8
    """Start length (the paper: 8 for small models, 64 at billion scale)."""
    total_steps: int = 100
    """Steps to reach the full length (the paper's T)."""
    difficulty_step: int = 8
    root_degree: int = 2
    difficulties: list = field(default_factory=list)
    max_steps: list = field(default_factory=list)
    schedule: str = "fixed"
    """'fixed' (DeepSpeed's schedules) or 'variance' (variance-aware pacing)."""


@dataclass
class EvalConfig:
    every: int = 25
    """Validation every N steps (and at the end)."""
    batches: int = 4
    """Fixed full-length held-out batches per evaluation."""


@dataclass
class MonitorConfig:
    quantities: str = "paper"
    """gradvar preset: paper, full or minimal."""
    flush_every: int = 25
    probe_sequences: int = 4
    """Fixed full-length held-out sequences for the probe loss and the sequence-length probe."""
    probe_loss_every: int = 5
    """Probe loss every N steps (every step for the first 30)."""
    probe_every: int = 50
    """Sequence-length probe every N steps ('full' preset)."""


@dataclass
class CheckpointConfig:
    every: int = 100
    """Checkpoint every N steps (and at the end, and on SIGTERM); 0: only at the end."""
    keep: int = 2
    """Newest checkpoints kept."""


@dataclass
class InterventionConfig:
    nonfinite: str = "skip"
    """On a non-finite loss or gradient: 'skip' the update, 'stop' with a report, or 'record' only."""
    skip_spikes: bool = False
    """Skip the update when the loss or grad norm is a z spike (decided on the device, no sync)."""
    spike_z: float = 6.0
    rewind_on_spike: bool = False
    """Rewind to the last checkpoint and skip the next batches on a loss spike (as PaLM did)."""
    rewind_skip_batches: int = 20


@dataclass
class LogConfig:
    tensorboard: str = ""
    """TensorBoard log folder for gradvar's scalars ('' off; 'run' for run_dir/tensorboard)."""
    wandb: str = ""
    """W&B project for gradvar's scalars ('' off; WANDB_MODE=offline works without the network)."""


@dataclass
class TrainConfig:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'."""
    dtype: str = "auto"
    """'auto' (bf16 autocast on CUDA, fp32 on CPU), 'bf16' or 'fp32'."""
    threads: int = 1
    """torch threads per process on CPU (1 per rank is fastest on small machines)."""
    log_every: int = 10
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    slw: SLWConfig = field(default_factory=SLWConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, world_size: int = 1) -> "TrainConfig":
        o, s = self.optim, self.slw
        for name, value in (("optim.lr", o.lr), ("optim.train_tokens", o.train_tokens), ("optim.batch_size", o.batch_size),
                            ("optim.micro_batch_size", o.micro_batch_size), ("optim.seq_len", o.seq_len)):
            if not value > 0:  # first: the checks below divide by these
                raise ConfigError(f"{name} must be > 0, got {value}")
        if o.batch_size % (world_size * o.micro_batch_size):
            raise ConfigError(f"optim.batch_size {o.batch_size} is not divisible by ranks ({world_size}) x "
                              f"optim.micro_batch_size ({o.micro_batch_size})")
        if o.seq_len > self.model.n_positions:
            raise ConfigError(f"optim.seq_len {o.seq_len} exceeds model.n_positions {self.model.n_positions}")
        if s.enabled:
            from gradvar.slw import SLWSchedule

            try:
                sched = slw_schedule(self)
                end = sched.end_seqlen()
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. difficulties that are not numbers
                raise ConfigError(f"slw: {exc}") from None
            if end > o.seq_len:
                raise ConfigError(f"slw end length {end} exceeds the model's context (optim.seq_len {o.seq_len})")
            assert isinstance(sched, SLWSchedule)
        if s.schedule not in ("fixed", "variance"):
            raise ConfigError(f"slw.schedule must be fixed or variance, got {s.schedule!r}")
        if self.intervention.nonfinite not in ("skip", "stop", "record"):
            raise ConfigError(f"intervention.nonfinite must be skip, stop or record, got {self.intervention.nonfinite!r}")
        if self.monitor.quantities not in ("paper", "full", "minimal"):
            raise ConfigError(f"monitor.quantities must be paper, full or minimal, got {self.monitor.quantities!r}")
        return self


def slw_schedule(cfg: TrainConfig):
    from gradvar.slw import SLWSchedule

    # SLWConfig carries the schedule's own fields (by name) plus the switches; the full length is the run's
    shared = {f.name: getattr(cfg.slw, f.name) for f in fields(SLWSchedule) if hasattr(cfg.slw, f.name)}
    shared.update(difficulties=tuple(cfg.slw.difficulties), max_steps=tuple(cfg.slw.max_steps))
    return SLWSchedule(**shared, max_seqlen=cfg.optim.seq_len)


# ---------------------------------------------------------------------------------------------- overrides
def _field_types(obj) -> dict:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in fields(obj)}


def _coerce(value, typ, key: str):
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
        if typ is list or typing.get_origin(typ) is list:
            out = json.loads(value) if isinstance(value, str) else list(value)
            if not isinstance(out, list):
                raise ValueError
            return out
    except (TypeError, ValueError, OverflowError, json.JSONDecodeError):  # OverflowError: int("inf")
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"{key}: unsupported type {typ}")


def apply_overrides(cfg: TrainConfig, overrides: dict) -> TrainConfig:
    """Set dotted keys ('optim.lr') to values (strings from the command line, or JSON values)."""
    for key, value in overrides.items():
        if key == "curriculum_learning":  # DeepSpeed's block, taken as is
            apply_deepspeed_curriculum(cfg, value)
            continue
        obj, parts = cfg, key.split(".")
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or part not in _field_types(obj):
                raise ConfigError(f"unknown config key {key!r}")
            obj = getattr(obj, part)
        types = _field_types(obj) if dataclasses.is_dataclass(obj) else {}
        leaf = parts[-1]
        if leaf not in types or dataclasses.is_dataclass(getattr(obj, leaf)):
            if leaf in types and isinstance(value, dict):
                apply_overrides(cfg, {f"{key}.{k}": v for k, v in value.items()})
                continue
            known = ", ".join(sorted(types)) or "none"
            raise ConfigError(f"unknown config key {key!r} (known here: {known})")
        setattr(obj, leaf, _coerce(value, types[leaf], key))
    return cfg


def apply_deepspeed_curriculum(cfg: TrainConfig, block) -> None:
    from gradvar.slw import SLWSchedule

    if not isinstance(block, dict):
        raise ConfigError("curriculum_learning must be a JSON object (DeepSpeed's block)")
    if not block.get("enabled", True):
        cfg.slw.enabled = False
        return
    try:
        sched = SLWSchedule.from_deepspeed(block)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:  # any malformed block
        raise ConfigError(f"curriculum_learning: {exc}") from None
    s = cfg.slw
    s.enabled, s.schedule_type, s.min_seqlen = True, sched.schedule_type, sched.min_seqlen
    s.total_steps, s.difficulty_step, s.root_degree = sched.total_steps, sched.difficulty_step, sched.root_degree
    s.difficulties, s.max_steps = list(sched.difficulties), list(sched.max_steps)
    if sched.max_seqlen != cfg.optim.seq_len:
        cfg.optim.seq_len = sched.max_seqlen


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "curriculum_learning":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_json(path) -> dict:
    """Read a config JSON (a full config.json, or a partial one, or a DeepSpeed config with its block)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object")
    data.pop("meta", None)
    ds = data.pop("curriculum_learning", None)
    try:
        flat = flatten(data)
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    if ds is not None:
        flat["curriculum_learning"] = ds
    return flat
