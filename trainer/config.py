"""One typed dataclass tree per run, validated with clear errors and saved as config.json beside the records.

Every field has a one-line docstring under it: `gradvar train --help` lists each field with its default and
that line, and `--section.field VALUE` sets it (trainer/options.py, trainer/overrides.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import ConfigError


@dataclass
class ModelConfig:
    """The GPT-2 model (Hugging Face GPT2LMHeadModel)."""

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
    attn: str = "sdpa"
    """Attention kernel: 'sdpa' (torch's fused scaled_dot_product_attention, flash kernels on a GPU) or 'eager'."""
    compile: str = "off"
    """torch.compile the training forward and loss: 'off', 'inductor' (fused GPU kernels) or another backend."""


@dataclass
class DataConfig:
    """The training corpus and its tokenizer."""

    source: str = "shakespeare+kjv"
    """'shakespeare+kjv' (the embedded default corpus: Shakespeare's plays and the King James Bible),
    'shakespeare' or 'kjv' alone, a text file or folder, or a nanoGPT-style .bin."""
    tokenizer: str = "bpe8k"
    """'bpe8k' (byte-level BPE, vocab 8192, trained on the corpus), 'bpeN' for another size, or 'gpt2'."""
    val_fraction: float = 0.05
    """Held-out share of the corpus (whole documents, never near-duplicates on both sides)."""
    cache_dir: str = "data_cache"
    """Where the token memmaps are cached."""


@dataclass
class OptimConfig:
    """AdamW, the learning-rate schedule, the batch and the token budget."""

    lr: float = 3e-3
    """Peak learning rate."""
    min_lr: float = 3e-4
    """Learning rate at the end of the cosine decay."""
    beta1: float = 0.9
    """Adam's first-moment decay."""
    beta2: float = 0.95
    """Adam's second-moment decay (the variance state the paper measures)."""
    eps: float = 1e-8
    """Adam's epsilon."""
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
    """Sequence Length Warmup, in DeepSpeed's curriculum terms."""

    enabled: bool = False
    """Sequence Length Warmup on/off (off is the plain baseline)."""
    schedule_type: str = "fixed_linear"
    """fixed_linear, fixed_root or fixed_discrete (DeepSpeed's schedule names)."""
    min_seqlen: int = 8
    """Start length (the paper: 8 for small models, 64 at billion scale)."""
    total_steps: int = 100
    """Steps to reach the full length (the paper's T)."""
    difficulty_step: int = 8
    """Every length is rounded down to a multiple of this."""
    root_degree: int = 2
    """Degree of the root for fixed_root."""
    difficulties: list = field(default_factory=list)
    """fixed_discrete: the lengths, as a JSON list (one more than slw.max_steps)."""
    max_steps: list = field(default_factory=list)
    """fixed_discrete: the last step of each length but the final one, as a JSON list."""
    schedule: str = "fixed"
    """'fixed' (DeepSpeed's schedules) or 'variance' (variance-aware pacing)."""
    control: str = "off"
    """'off' (train at the schedule's length: SLW) or 'batch': the token-matched control, full-length sequences,
    batch_size x length / seq_len of them per step (SLW's tokens per step at every step, batch-size warmup)."""


@dataclass
class EvalConfig:
    """Validation on fixed full-length held-out batches."""

    every: int = 25
    """Validation every N steps (and at the end)."""
    batches: int = 4
    """Fixed full-length held-out batches per evaluation."""


@dataclass
class MonitorConfig:
    """What gradvar records, and how often it writes."""

    quantities: str = "paper"
    """gradvar preset: paper, full or minimal."""
    flush_every: int = 25
    """Read the recorded values back from the device and write them every N steps."""
    probe_sequences: int = 4
    """Fixed full-length held-out sequences for the probe loss and the sequence-length probe."""
    probe_loss_every: int = 5
    """Probe loss every N steps (every step for the first 30)."""
    probe_every: int = 50
    """Sequence-length probe every N steps ('full' preset)."""
    probe_at: list = field(default_factory=list)
    """Steps at which the sequence-length probe also runs (densely around the LR warmup peak, say)."""
    probe_seqlens: list = field(default_factory=list)
    """The probe's lengths (each sees the same tokens, so each costs a full-length probe); empty: 16, 32, 64 ...
    up to the context."""


@dataclass
class CheckpointConfig:
    """Atomic checkpoints for resuming."""

    every: int = 100
    """Checkpoint every N steps (and at the end, and on SIGTERM); 0: only at the end."""
    keep: int = 2
    """Newest checkpoints kept."""
    steps: list = field(default_factory=list)
    """Steps also checkpointed, and never pruned (the starting points of causal branches)."""


@dataclass
class InterventionConfig:
    """What the trainer does about non-finite values and loss spikes."""

    nonfinite: str = "skip"
    """On a non-finite loss or gradient: 'skip' the update, 'stop' with a report, or 'record' only."""
    skip_spikes: bool = False
    """Skip the update when the loss or grad norm is a z spike (decided on the device, no sync)."""
    spike_z: float = 6.0
    """z-score above which a loss or grad norm counts as a spike for intervention.skip_spikes."""
    rewind_on_spike: bool = False
    """Rewind to the last checkpoint and skip the next batches on a loss spike (as PaLM did)."""
    rewind_skip_batches: int = 20
    """Batches skipped after a rewind."""
    plant: str = ""
    """Test-only: a known cause planted at one step, to check what `gradvar diagnose` attributes the spike to
    (trainer.plant): 'lr@12:block1.mlp*100' or 'batch@12:random' / 'batch@12:repeat'; '' off."""


@dataclass
class ParallelConfig:
    """How the model is spread over ranks."""

    strategy: str = "ddp"
    """'ddp' (replicated model, all-reduced gradients) or 'fsdp' (FSDP2: each block and the root sharded
    across ranks, sharded checkpoints); one process trains unwrapped either way."""


@dataclass
class LogConfig:
    """Live dashboards for gradvar's numbers beside the records."""

    tensorboard: str = ""
    """TensorBoard log folder for gradvar's scalars ('' off; 'run' for run_dir/tensorboard)."""
    wandb: str = ""
    """W&B project for gradvar's scalars ('' off; WANDB_MODE=offline works without the network)."""


@dataclass
class TrainConfig:
    """One training run."""

    name: str = "run"
    """Run name: the run directory is out_dir/name."""
    seed: int = 0
    """Seed for the model's initialisation and the data order."""
    out_dir: str = "runs"
    """Folder the run directory is created in."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'."""
    dtype: str = "auto"
    """'auto' (bf16 autocast on CUDA, fp32 on CPU), 'bf16' or 'fp32'."""
    threads: int = 1
    """torch threads per process on CPU (1 per rank is fastest on small machines)."""
    log_every: int = 10
    """Print a progress line every N steps."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    slw: SLWConfig = field(default_factory=SLWConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return asdict(self)

    def _check_control(self) -> None:
        """The token-matched control needs whole full-length sequences in every micro-batch at every length."""
        s, o = self.slw, self.optim
        if s.control not in ("off", "batch"):
            raise ConfigError(f"slw.control must be off or batch, got {s.control!r}")
        if s.control == "off":
            return
        if not s.enabled or s.schedule != "fixed":
            raise ConfigError("slw.control batch follows a fixed SLW schedule: set slw.enabled and slw.schedule fixed")
        from gradvar.slw import schedule_lengths, token_matched_batch

        for length in schedule_lengths(slw_schedule(self)):
            try:
                token_matched_batch(o.micro_batch_size, length, o.seq_len)
            except ValueError as exc:
                raise ConfigError(f"slw.control batch: a micro-batch of optim.micro_batch_size: {exc}") from None

    def validate(self, world_size: int = 1) -> TrainConfig:
        o, s = self.optim, self.slw
        for name, value in (
            ("optim.lr", o.lr),
            ("optim.train_tokens", o.train_tokens),
            ("optim.batch_size", o.batch_size),
            ("optim.micro_batch_size", o.micro_batch_size),
            ("optim.seq_len", o.seq_len),
        ):
            if not value > 0:  # first: the checks below divide by these
                raise ConfigError(f"{name} must be > 0, got {value}")
        if o.batch_size % (world_size * o.micro_batch_size):
            raise ConfigError(
                f"optim.batch_size {o.batch_size} is not divisible by ranks ({world_size}) x "
                f"optim.micro_batch_size ({o.micro_batch_size})"
            )
        if o.seq_len > self.model.n_positions:
            raise ConfigError(f"optim.seq_len {o.seq_len} exceeds model.n_positions {self.model.n_positions}")
        if s.enabled:
            try:
                sched = slw_schedule(self)
                end = sched.end_seqlen()
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. difficulties that are not numbers
                raise ConfigError(f"slw: {exc}") from None
            if end > o.seq_len:
                raise ConfigError(f"slw end length {end} exceeds the model's context (optim.seq_len {o.seq_len})")
        if s.schedule not in ("fixed", "variance"):
            raise ConfigError(f"slw.schedule must be fixed or variance, got {s.schedule!r}")
        self._check_control()
        if self.intervention.nonfinite not in ("skip", "stop", "record"):
            raise ConfigError(
                f"intervention.nonfinite must be skip, stop or record, got {self.intervention.nonfinite!r}"
            )
        from .plant import parse_plant

        parse_plant(self.intervention.plant)  # a malformed plant is one ConfigError line before any work
        if self.parallel.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"parallel.strategy must be ddp or fsdp, got {self.parallel.strategy!r}")
        if self.monitor.quantities not in ("paper", "full", "minimal"):
            raise ConfigError(f"monitor.quantities must be paper, full or minimal, got {self.monitor.quantities!r}")
        return self


def slw_schedule(cfg: TrainConfig):
    from gradvar.slw import SLWSchedule

    # SLWConfig carries the schedule's own fields (by name) plus the switches; the full length is the run's
    shared = {f.name: getattr(cfg.slw, f.name) for f in fields(SLWSchedule) if hasattr(cfg.slw, f.name)}
    shared.update(difficulties=tuple(cfg.slw.difficulties), max_steps=tuple(cfg.slw.max_steps))
    return SLWSchedule(**shared, max_seqlen=cfg.optim.seq_len)


from .overrides import apply_overrides, load_json  # noqa: E402, F401  (the config's public API)
