"""bsadvisor: don't decay the learning rate, increase the batch size, within what the device holds.

The pure-math API (``convert_schedule``, ``Plan``, ``temperature``) imports no torch;
the torch-facing names (``probe``, ``Target``, ``BatchSizeScheduler``, ...) are loaded
on first use so ``import bsadvisor`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Plan": "core.plan", "Stage": "core.plan", "Setting": "core.plan",
    "convert_schedule": "core.convert",
    "TemperatureModel": "core.temperature", "temperature": "core.temperature",
    "parse_schedule": "core.schedules",
    "UserError": "core.errors",
    "Target": "targets.target", "load_target": "targets.loading",
    "probe": "measure.probe", "ProbeResult": "core.probe_result", "load_probe": "core.probe_result",
    "BatchSizeScheduler": "runtime.scheduler", "PlanBatchSampler": "runtime.sampler",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bsadvisor' has no attribute {name!r}")
