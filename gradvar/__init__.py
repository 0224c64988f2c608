"""gradvar: record gradient variance, Adam variance-state extremes and loss spikes per sequence length.

    mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")
    ...  # loss.backward(); optimizer.step()
    mon.step(loss=loss)
    mon.close()
    tables = gradvar.read_records("runs/my_run")   # {"steps": DataFrame, "layers": ..., ...}
"""
from .records import RecordsWriteError, read_records
from .schema import SCHEMA_VERSION
from .spikes import SpikeRule, classify_run, loss_ratio, ratio_spikes, spike_events, z_spikes

__version__ = "0.1.0"

__all__ = [
    "Monitor", "RecordsWriteError", "SCHEMA_VERSION", "SLWSchedule", "SpikeRule", "classify_run", "loss_ratio",
    "ratio_spikes", "read_records", "spike_events", "truncate", "z_spikes",
]


# Torch-backed names load on first use, so reading records or spike rules (gradvar diagnose, gradvar report)
# never imports torch.
_LAZY = {"Monitor": "monitor", "SLWSchedule": "slw", "truncate": "slw"}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f"gradvar.{_LAZY[name]}"), name)
    # `gradvar.integrations.hf` without importing transformers on `import gradvar`
    if name == "integrations":
        return importlib.import_module("gradvar.integrations")
    raise AttributeError(f"module 'gradvar' has no attribute {name!r}")
