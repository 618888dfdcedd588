"""bsadvisor: don't decay the learning rate, increase the batch size, within what the device holds.

The pure-math API (``convert_schedule``, ``Plan``, ``temperature``) imports no torch;
the torch-facing names (``probe``, ``Target``, ``BatchSizeScheduler``, ...) are loaded
on first use so ``import bsadvisor`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Plan": "plan", "Stage": "plan", "Setting": "plan",
    "convert_schedule": "convert",
    "TemperatureModel": "temperature", "temperature": "temperature",
    "parse_schedule": "schedules",
    "UserError": "errors",
    "Target": "target", "load_target": "target",
    "probe": "probing", "ProbeResult": "probe_result", "load_probe": "probe_result",
    "BatchSizeScheduler": "runtime", "PlanBatchSampler": "runtime",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bsadvisor' has no attribute {name!r}")
