"""bsadvisor: don't decay the learning rate, increase the batch size, within what the device holds.

Everything the docs use is importable from here (``from bsadvisor import Plan, probe``), so
user code never names a sub-package; docs/architecture.md says where each name lives.
The torchrun plumbing has its own namespace, ``bsadvisor.distributed``, also loaded on first use.
The pure-math names (``convert_schedule``, ``Plan``, ``temperature``, ...) import no torch;
every name is loaded on first use, so ``import bsadvisor`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> "sub.module" that defines it, or "sub.module:attribute" when the names differ
_LAZY = {
    # core: pure math and files (no torch)
    "Plan": "core.plan", "Stage": "core.plan", "Setting": "core.plan",
    "convert_schedule": "core.convert", "ConvertOptions": "core.options",
    "TemperatureModel": "core.temperature", "temperature": "core.temperature",
    "parse_schedule": "core.schedules",
    "UserError": "core.errors",
    "ProbeResult": "core.probe_result", "load_probe": "core.probe_result",
    "NoiseModel": "core.noise_model", "load_trace": "core.noise_model",
    "recommend": "core.recommend", "Recommendation": "core.recommend",
    # targets: what is trained and probed
    "Target": "targets.target", "load_target": "targets.loading",
    # measure: the probe, and advise (probe, then recommend)
    "probe": "measure.probe", "advise": "measure.advise",
    "ProbeOptions": "core.probe_options",
    # runtime: following a plan in a training loop
    "BatchSizeScheduler": "runtime.scheduler", "PlanBatchSampler": "runtime.sampler",
    "train_step": "runtime.step", "make_gather": "runtime.batches", "map_tensors": "runtime.batches",
    "NoiseMonitor": "runtime.monitor", "StepRecipe": "runtime.precision", "RunState": "runtime.state",
    "validate": "runtime.validation", "Validation": "runtime.validation", "ValidateOptions": "core.validate_options",
    # integrations: other frameworks follow a plan (each imports its framework on first use)
    "FollowPlan": "integrations.lightning", "target_from_lightning": "integrations.lightning",
    "HFFollowPlan": "integrations.transformers",
}

# public sub-modules, imported on first use: ``bsadvisor.distributed`` (Dist, init_from_env, current)
_NAMESPACES = ("distributed",)

__all__ = sorted(_LAZY) + list(_NAMESPACES) + ["__version__"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads each name on first use
    from . import distributed
    from .core.convert import convert_schedule
    from .core.errors import UserError
    from .core.noise_model import NoiseModel, load_trace
    from .core.options import ConvertOptions
    from .core.plan import Plan, Setting, Stage
    from .core.probe_options import ProbeOptions
    from .core.probe_result import ProbeResult, load_probe
    from .core.recommend import Recommendation, recommend
    from .core.schedules import parse_schedule
    from .core.temperature import TemperatureModel, temperature
    from .integrations.lightning import FollowPlan, target_from_lightning
    from .integrations.transformers import HFFollowPlan
    from .measure.advise import advise
    from .measure.probe import probe
    from .runtime.monitor import NoiseMonitor
    from .runtime.precision import StepRecipe
    from .runtime.sampler import PlanBatchSampler
    from .runtime.scheduler import BatchSizeScheduler
    from .runtime.batches import make_gather, map_tensors
    from .runtime.state import RunState
    from .runtime.step import train_step
    from .runtime.validation import Validation, validate
    from .core.validate_options import ValidateOptions
    from .targets.loading import load_target
    from .targets.target import Target


def __getattr__(name: str):
    if name in _LAZY:
        module_name, _, attribute = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f".{module_name}", __name__), attribute or name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _NAMESPACES:  # importing a sub-module sets it on the package, so this runs once
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bsadvisor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
