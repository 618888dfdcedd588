"""A Target's conversion options: what advise and validate convert for a target, decided once.

The schedule and length from the target's own recipe when none is given, the target's
lr, B0, momentum (Adam's β1 default when it is 0), optimizer and N, and whether the model
has BatchNorm layers. ``bsadvisor.advise`` (measure.advise) and validate's plan both start
from :func:`options_for_target`, so the two commands convert the same options for the same
target. No torch at import (the BatchNorm detector imports it when called).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core.defaults import ADAM_BETA1, ADAM_FAMILY
from bsadvisor.core.errors import UserError
from bsadvisor.core.schedules import Schedule, parse_schedule
from bsadvisor.core.validate_options import check_epochs
from bsadvisor.targets.target import batchnorm_layers


def _length_given(epochs: Optional[float], kw: dict) -> bool:
    """Whether a run's length is given: epochs, or total samples or steps."""
    return epochs is not None or bool(kw.get("total_samples") or kw.get("total_steps"))


def apply_recipe(target, schedule: Optional[str], epochs: Optional[float],
                 kw: dict) -> tuple[Optional[str], Optional[float], Optional[str]]:
    """The schedule and length to convert, and a note when they come from the target's own recipe.

    A target that records its recipe (``metadata``: schedule, schedule_unit, epochs, seq_len;
    builtin:charlm does) supplies it when neither a schedule nor a length is given; ``kw``
    then gets the recipe's schedule_unit and seq_len where it has none.
    """
    recipe = getattr(target, "metadata", None) or {}
    if schedule is not None or _length_given(epochs, kw) or not recipe.get("schedule"):
        return schedule, epochs, None
    if not isinstance(recipe["schedule"], str):
        raise UserError(f"{target.name}'s metadata['schedule'] must be a schedule text such as "
                        f"'MultiStepLR(milestones=[30], gamma=0.1)', got {checks.show(recipe['schedule'])}")
    # validate's limit (it trains every epoch) also on advise's path: a recipe past it is refused by both
    # commands with the same message
    epochs = check_epochs(recipe.get("epochs"), f"{target.name}'s metadata['epochs']")
    for key in ("schedule_unit", "seq_len"):
        if kw.get(key) is None:
            kw[key] = recipe.get(key)
    schedule = recipe["schedule"]
    return schedule, epochs, (f"note: using {target.name}'s own recipe: {schedule} over {epochs:g} epoch(s), "
                              f"stepped per {kw.get('schedule_unit') or 'epoch'}")


@dataclass(frozen=True)
class TargetOptions:
    """The conversion options for a target (``options``: plan_from_options' keywords), the note saying the
    schedule came from its recipe (None otherwise), its BatchNorm layers, and the options as given."""

    options: dict
    note: Optional[str]
    batchnorm: tuple[str, ...]
    given: dict

    @property
    def length_given(self) -> bool:
        """Whether the run has a length (epochs, or total samples or steps)."""
        return _length_given(self.options.get("epochs"), self.options)


def _table_sets_momentum(schedule: Any) -> bool:
    """Whether ``schedule`` is a CSV table with a momentum column (ConvertOptions takes the momentum from it)."""
    if schedule is None:
        return False
    try:
        sched = schedule if isinstance(schedule, Schedule) else parse_schedule(schedule)
    except UserError:  # a bad schedule: ConvertOptions says why
        return False
    return bool(getattr(sched, "momenta", None))


def options_for_target(target, given: Optional[dict[str, Any]] = None) -> TargetOptions:
    """``given`` (conversion keywords, None: not given) completed from ``target``: its recipe, settings, N.

    lr, batch_size and momentum default to the target's (an Adam-family target with momentum 0
    gets β1 = ADAM_BETA1, what Target.make_optimizer trains with); dataset_size and optimizer
    are always the target's; schedule, epochs, schedule_unit and seq_len come from the target's
    recipe when neither a schedule nor a length is given (:func:`apply_recipe`).
    """
    given = dict(given or {})
    kw = dict(given)
    kw["schedule"], kw["epochs"], note = apply_recipe(target, kw.get("schedule"), kw.get("epochs"), kw)
    m = kw.get("momentum")
    if m is None and not _table_sets_momentum(kw.get("schedule")):  # a table's column is the momentum then
        m = target.momentum
        if target.optimizer in ADAM_FAMILY and m == 0:
            m = getattr(target, "beta1", ADAM_BETA1)  # optimizer_kwargs' β1, else make_optimizer's default
    kw.update(lr=target.lr if kw.get("lr") is None else kw["lr"], momentum=m, dataset_size=target.dataset_size,
              batch_size=target.batch_size if kw.get("batch_size") is None else kw["batch_size"],
              optimizer=target.optimizer)
    return TargetOptions(kw, note, tuple(batchnorm_layers(target.model)), given)
