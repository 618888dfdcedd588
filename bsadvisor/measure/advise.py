"""``bsadvisor.advise``: measure a Target, then recommend, in one call (what ``bsadvisor advise`` runs).

The steps, each a public function: the target's options (runtime.recipe.options_for_target:
recipe, settings, Adam's β1, BatchNorm), a dry conversion with them (bad options fail before
the probe, not after it), :func:`bsadvisor.probe`, then
:meth:`bsadvisor.Recommendation.from_options` (core.recommend): the plan, capped at what the
probe measured, or the original schedule when growth does not pay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.errors import ArgumentTypeError, UserError
from bsadvisor.core.fileio import write_json
from bsadvisor.core.predict import noise_model_of, plan_from_options, read_trace
from bsadvisor.core.options import AFTER_PROBE
from bsadvisor.core.recommend import Recommendation
from bsadvisor.runtime.recipe import TargetOptions, options_for_target
from bsadvisor.targets.target import Target



def advise(target, options: Union[TargetOptions, dict, None] = None, *, probe_out: Union[str, Path, None] = None,
           progress: Optional[Callable[[str, float], None]] = None, tuned_lr: bool = False,
           **probe_options: Any) -> Recommendation:
    """Probe ``target`` (a Target) and recommend a plan for its LR schedule: a :class:`Recommendation`.

    ``options``: the conversion keywords (schedule, epochs, rule, noise_cap, noise_trace, ...;
    None: not given) or what :func:`options_for_target` made of them; the target supplies the
    rest, its recipe the schedule when none is given. ``probe_options``: the keywords of
    :func:`bsadvisor.probe` (device, budget_seconds, seed, ...), which measures at the given
    batch_size and lr (default: the target's). ``probe_out``: also write the probe's result
    there, before recommending, so a plan refused afterwards (an unusable noise_cap) keeps
    the measurement. ``tuned_lr``: the LR is the best of a sweep (``--tuned-lr``: for Adam and
    AdamW the original schedule is recommended, Recommendation.from_options). Raises UserError
    when there is no schedule and length to convert.
    """
    from bsadvisor.measure.probe import probe  # here: torch loads when a target is probed, not on import

    if isinstance(target, str):
        raise ArgumentTypeError(f"target must be a Target, got the string {checks.show(target)}: load it first, "
                                "bsadvisor.advise(bsadvisor.load_target(...), ...)", parameter="target")
    checks.instance("target", target, Target, "a Target (bsadvisor.load_target builds one)")
    tuned_lr = checks.flag("tuned_lr", tuned_lr)  # before the probe, as every other check
    if options is not None:
        checks.instance("options", options, (TargetOptions, dict), "a dict of conversion options, or None")

    prepared = options if isinstance(options, TargetOptions) else options_for_target(target, options)
    opts = prepared.options
    if opts.get("schedule") is None or not prepared.length_given:
        raise UserError(f"advise needs --schedule and --epochs (the LR schedule you train with); {target.name} "
                        "records no recipe of its own")
    trace = read_trace(opts.get("noise_trace"))
    noise_model_of(None, trace, target.dataset_size)  # another data set's trace: not after the probe
    # the same conversion with no device layout and no cap: bad options fail before the probe
    plan_from_options(**{k: v for k, v in opts.items() if k not in AFTER_PROBE})
    result = probe(target, batch_size=prepared.given.get("batch_size"), lr=prepared.given.get("lr"),
                   progress=progress, **probe_options)
    if probe_out is not None:
        write_json(probe_out, result.to_dict())
    return Recommendation.from_options({**opts, "noise_trace": trace}, probe=result,
                                       batchnorm=bool(prepared.batchnorm), tuned_lr=tuned_lr)
