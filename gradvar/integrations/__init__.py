"""Integrations with other training loops (imported on first use)."""


def __getattr__(name):
    if name in ("hf", "lightning"):
        import importlib

        return importlib.import_module("gradvar.integrations." + name)
    raise AttributeError(f"module 'gradvar.integrations' has no attribute {name!r}")
