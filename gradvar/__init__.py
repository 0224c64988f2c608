"""gradvar: record gradient variance, Adam variance-state extremes and loss spikes per sequence length.

mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")
...  # loss.backward(); optimizer.step()
mon.step(loss=loss)
mon.close()
tables = gradvar.read_records("runs/my_run")   # {"steps": DataFrame, "layers": ..., ...}
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Names are bound on first use, so `import gradvar` (and the `gradvar` command's --help) costs no torch import
# until the Monitor is touched.
_EXPORTS = {
    "Monitor": "monitor",
    "DeepSpeedMonitor": "integrations.deepspeed",
    "RecordsWriteError": "records",
    "read_records": "records",
    "SCHEMA_VERSION": "schema",
    "SLWSchedule": "slw",
    "truncate": "slw",
    "token_matched_batch": "slw",
    "SpikeRule": "spikes",
    "classify_run": "spikes",
    "loss_ratio": "spikes",
    "ratio_spikes": "spikes",
    "spike_events": "spikes",
    "z_spikes": "spikes",
}
_SUBMODULES = ("integrations", "io", "quantities", "sinks")

__all__ = [
    "DeepSpeedMonitor",
    "Monitor",
    "RecordsWriteError",
    "SCHEMA_VERSION",
    "SLWSchedule",
    "SpikeRule",
    "classify_run",
    "loss_ratio",
    "ratio_spikes",
    "read_records",
    "spike_events",
    "token_matched_batch",
    "truncate",
    "z_spikes",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ binds the same names
    from .integrations.deepspeed import DeepSpeedMonitor
    from .monitor import Monitor
    from .records import RecordsWriteError, read_records
    from .schema import SCHEMA_VERSION
    from .slw import SLWSchedule, token_matched_batch, truncate
    from .spikes import SpikeRule, classify_run, loss_ratio, ratio_spikes, spike_events, z_spikes


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"gradvar.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:  # `gradvar.integrations.hf` without importing transformers on `import gradvar`
        return importlib.import_module(f"gradvar.{name}")
    raise AttributeError(f"module 'gradvar' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
