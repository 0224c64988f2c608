"""What people watch while a run trains: a progress bar (tqdm, with rate and ETA) on a terminal and plain
lines in logs and CI; and gradvar's dashboards (TensorBoard, W&B) from the `log` config.

The bar is updated from host counters only (tokens, steps, runs finished): it never reads the device.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path


def dashboard_sinks(cfg) -> list:
    """The monitor's sinks for `--log.tensorboard DIR|run` and `--log.wandb PROJECT` (opened on rank 0 only)."""
    from gradvar.sinks import TensorBoardSink, WandbSink

    out, log = [], cfg.log
    if log.tensorboard:
        out.append(TensorBoardSink(cfg.run_dir / "tensorboard" if log.tensorboard == "run" else Path(log.tensorboard)))
    if log.wandb:
        run_id = wandb_run_id(cfg.run_dir)
        out.append(
            WandbSink(
                project=log.wandb, name=cfg.name, config=cfg.to_dict(), dir=str(cfg.run_dir), id=run_id, resume="allow"
            )
        )
    return out


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, made on the first start and kept beside the records, so that a
    resumed run (`--resume`, a restarted rank) continues the same W&B run instead of opening a new one."""
    path = Path(run_dir) / "wandb_run_id"
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]  # W&B's own ids: 8 characters of [0-9a-z]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    tmp.replace(path)  # atomic: a crash never leaves an empty id
    return run_id


class Progress:
    def __init__(
        self,
        total: int,
        *,
        unit: str,
        desc: str = "",
        initial: int = 0,
        log=print,
        stream=None,
        bar: bool | None = None,
    ):
        """bar: None decides by whether `stream` (stderr by default) is a terminal. Without a bar, `write`
        is just `log` (the plain lines)."""
        stream = stream or sys.stderr
        self.log = log
        self.bar = None
        if bar if bar is not None else _isatty(stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit=unit,
                unit_scale=True,
                desc=desc,
                file=stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def update_to(self, n: int, postfix: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n - self.bar.n)
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)

    def write(self, line: str) -> None:
        """A log line through `log`; on a terminal the bar is cleared first and redrawn below it."""
        if self.bar is None:
            self.log(line)
            return
        with self.bar.external_write_mode(file=self.bar.fp):
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream: no terminal
        return False
