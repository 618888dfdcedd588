"""The recommendation: conversion options (and a probe, a noise trace) → the plan to follow.

Pure Python (no torch). Two steps, one per command that needs them:

- :func:`recommend` is the plan ``convert-schedule`` prints: the conversion, capped by the
  probe's device cap and noise scale and annotated with its predicted times (core.predict).
- :meth:`Recommendation.from_options` is what ``advise`` prints: that plan, then the
  decision whether growing pays at all (when B0 is already past the noise scale the
  recommended plan is the original schedule, unchanged) and, when B0 is well below it, the
  variants that start at a larger batch. ``bsadvisor.advise`` (measure.advise) measures a
  Target first and ends here.

The noise trace is read once (core.predict.read_trace) and every step reads that copy.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.baseline import baseline_of
from bsadvisor.core.defaults import ADAM_FAMILY
from bsadvisor.core.options import OPTION_NAMES, ConvertOptions
from bsadvisor.core.plan import Plan
from bsadvisor.core.probe_result import ProbeResult, load_probe
from bsadvisor.core.predict import (PLAN_OPTIONS, KeepBatchAdvice, StartAdvice, TunedLRAdvice, annotate,
                                    keep_batch_advice, resolve, start_batch_advice, tuned_lr_advice)
from bsadvisor.core.remarks import BATCHNORM_NOTE, batchnorm_text

ADVICE_SCHEMA = "bsadvisor.advice/1"

#: What replaces the plan's generic BatchNorm note once the model is known to have BatchNorm layers.
BATCHNORM_WARNING = batchnorm_text(known=True)

#: The notes of an original schedule recommended instead of a plan, by the keep advice's reason.
KEEP_NOTES = {
    "noise_cap": ("recommended: the original schedule, unchanged (the batch is already past the --noise-cap multiple "
                  "of the noise scale)"),
    "tuned_lr": ("recommended: the original schedule, unchanged (--tuned-lr: at a tuned LR no batch growth for Adam "
                 "held on every model measured)"),
}


#: What --tuned-lr says for SGD, where it changes nothing.
TUNED_LR_SGD_NOTE = ("--tuned-lr changes nothing for SGD: the paper's conversion, made at its models' usual LRs (not "
                     "measured here at the best LR of a sweep)")


def _keywords(options: Union[ConvertOptions, dict, None], keywords: dict[str, Any]) -> dict[str, Any]:
    """plan_from_options' keywords from a ConvertOptions (its conversion fields) or a dict (which may also hold
    probe and noise_trace), ``keywords`` over them (a None keyword: not given there)."""
    if isinstance(options, ConvertOptions):  # its world_size counts above 1 (1 may be a probe's to say)
        options = {**{name: getattr(options, name) for name in OPTION_NAMES if name in PLAN_OPTIONS},
                   "world_size": options.world_size if options.world_size > 1 else None,
                   "micro_batch": options.micro_batch,
                   # its noise model is a measured trace: given as one (a trace keyword still wins)
                   **({"noise_trace": options.noise_model} if options.noise_model is not None else {})}
    return {**(options or {}), **{k: v for k, v in keywords.items() if v is not None or k not in (options or {})}}


def recommend(options: Union[ConvertOptions, dict, None] = None, *, probe: Any = None, noise_trace: Any = None,
              batchnorm: Optional[bool] = None, **keywords: Any) -> Plan:
    """The batch-growth plan for ``options``: converted, capped and annotated with ``probe`` and ``noise_trace``.

    ``options`` is a ConvertOptions or a dict of the keywords :func:`core.predict.plan_from_options`
    takes (None: not given, so the probe's value or the default applies; a ConvertOptions' noise_cap_batch
    and noise_model are the probe's and the trace's to give); ``keywords`` are more of them and win.
    ``probe`` is a ProbeResult or a probe.json file; ``noise_trace`` a trace file, a NoiseModel or a
    read :class:`core.predict.Trace`. ``batchnorm``: whether the model has BatchNorm layers (None:
    unknown, and the plan says what to do if it has; True: a warning; False: nothing).
    """
    batchnorm = checks.optional(checks.flag, "batchnorm", batchnorm)  # "no" is not True
    kw = _keywords(options, {**keywords, "probe": probe, "noise_trace": noise_trace})
    return _batchnorm_said(resolve(**kw).plan(), batchnorm)


def _batchnorm_said(plan: Plan, batchnorm: Optional[bool]) -> Plan:
    """``plan`` with the BatchNorm warning when the model has BatchNorm layers, and no generic note when it is
    known whether it has (None: unknown, the plan's generic note stays)."""
    if batchnorm is None:
        return plan
    return replace(plan, notes=[n for n in plan.notes if n != BATCHNORM_NOTE],
                   warnings=[*plan.warnings, *([BATCHNORM_WARNING] if batchnorm else [])])


@dataclass(frozen=True)
class Recommendation:
    """What advise recommends: ``plan`` to follow, and why.

    ``plan`` is the batch-growth plan, or with ``keep_batch`` (a --noise-cap K asked for, and B0 already past
    K × the noise scale where the decay begins, core.predict.keep_batch_advice; or --tuned-lr for an Adam-family
    run, core.predict.tuned_lr_advice) the original schedule unchanged (its probe, a ProbeResult or a probe.json
    file, is then read once). ``start_advice``: the larger-start variants when B0 is well below the noise scale
    (core.predict.start_batch_advice). ``probe``: the ProbeResult it was made with, if any.
    """

    plan: Plan
    probe: Any = None
    keep_batch: Union[KeepBatchAdvice, TunedLRAdvice, None] = None
    start_advice: Optional[StartAdvice] = None

    def __post_init__(self) -> None:
        checks.instance("plan", self.plan, Plan, "a Plan (Recommendation.from_options builds one)")
        if self.probe is not None:
            checks.instance("probe", self.probe, ProbeResult, "a ProbeResult or None")
        for name, kinds in (("keep_batch", (KeepBatchAdvice, TunedLRAdvice)), ("start_advice", (StartAdvice,))):
            if getattr(self, name) is not None:
                checks.instance(name, getattr(self, name), kinds,
                                f"a {' or '.join(k.__name__ for k in kinds)} (core.predict) or None")

    @property
    def recommendation(self) -> str:
        """"original" when the original schedule is recommended, else "plan"."""
        return "original" if self.keep_batch is not None else "plan"

    @classmethod
    def from_options(cls, options: Union[ConvertOptions, dict, None] = None, *, probe: Any = None,
                     noise_trace: Any = None, batchnorm: Optional[bool] = None, tuned_lr: Optional[bool] = None,
                     **keywords: Any) -> "Recommendation":
        """:func:`recommend` with the same arguments, then the keep-the-batch decision and the start advice.

        ``tuned_lr``: the LR is the best of a sweep (advise's --tuned-lr, not a conversion option); for Adam and
        AdamW the original schedule is then recommended (core.predict.tuned_lr_advice). The options are resolved
        once (core.predict.resolve: the probe and the trace read once); the start advice's variants convert those
        options with another ``increase_lr``."""
        batchnorm = checks.optional(checks.flag, "batchnorm", batchnorm)
        kw = _keywords(options, {**keywords, "probe": probe, "noise_trace": noise_trace})
        tuned_lr = checks.optional(checks.flag, "tuned_lr", tuned_lr)
        probe = kw.pop("probe", None)
        if probe is not None and not isinstance(probe, ProbeResult):
            probe = load_probe(probe)  # read once (the plan then names the probe's target, not the file)
        conversion = resolve(probe=probe, **kw)
        plan = _batchnorm_said(conversion.plan(), batchnorm)
        keep = keep_batch_advice(plan, conversion.noise_model) or (tuned_lr_advice(plan) if tuned_lr else None)
        if keep is not None:  # no growth pays (or none is known to, at a tuned LR): the original schedule
            return cls(original_plan(plan, probe, keep.reason), probe, keep)
        if tuned_lr and plan.options.optimizer not in ADAM_FAMILY:
            plan = replace(plan, notes=[*plan.notes, TUNED_LR_SGD_NOTE])
        advice = start_batch_advice(plan, conversion.noise_model, lambda k: conversion.plan(increase_lr=k))
        return cls(plan, probe, None, advice)

    def to_dict(self) -> dict[str, Any]:
        """The ``bsadvisor.advice/1`` document advise --json prints."""
        return {"schema": ADVICE_SCHEMA, "probe": self.probe.to_dict() if self.probe is not None else None,
                "plan": self.plan.to_dict(),
                "advice": self.start_advice.to_dict() if self.start_advice is not None else None,
                "keep_batch": self.keep_batch.to_dict() if self.keep_batch is not None else None,
                "recommendation": self.recommendation}


def original_plan(plan: Plan, probe=None, reason: str = "noise_cap") -> Plan:
    """The original schedule of ``plan`` as the recommended plan (batch B0 throughout), with the probe's
    predicted time; its first note says why (``reason``, a keep advice's)."""
    kept = annotate(baseline_of(plan), probe, world_size=plan.options.world_size)
    return replace(kept.with_inputs(probe=plan.probe_source), notes=[KEEP_NOTES[reason], *kept.notes])
