"""What a plan's report says about the finished staircase: the hybrid tail, N/10, rounding, units. No torch here."""
from __future__ import annotations

from typing import Sequence

from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import Stage
from bsadvisor.core.rounding import Rounding
from bsadvisor.core.spans import Span, where
from bsadvisor.core.staircase import Staircase


def batchnorm_text(known: bool = False, layers: Sequence[str] = ()) -> str:
    """What bsadvisor says about BatchNorm, whose statistics depend on the batch: ``known`` False: the note every
    plan carries (convert-schedule has no model to look at); True: advise's warning for a model that has
    BatchNorm layers; ``layers`` given: validate's warning, naming them (its runs include the effect)."""
    effect = "their statistics depend on the batch"
    fix = "keep a fixed per-device group as the batch grows (ghost batch norm)"
    if layers:
        shown = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
        return (f"the model has BatchNorm layers ({shown}): {effect}, so a larger batch, and gradient accumulation "
                "above --max-micro-batch, change more than the gradient noise; the comparison includes that effect: "
                f"{fix} to avoid it")
    if known:
        return f"the model has BatchNorm layers, whose {effect}: {fix} or check with bsadvisor validate"
    return f"if the model has BatchNorm layers: {effect}; {fix} or check with bsadvisor validate"


#: The note every plan carries; advise and validate, which see the model, warn instead when it has BatchNorm.
BATCHNORM_NOTE = batchnorm_text()


def remarks(options: ConvertOptions, stairs: "Staircase", per_span: list[Span], stages: list[Stage],
            cap_words: str, variant: bool, notes: list[str], warnings: list[str]) -> None:
    """What the report says about the finished staircase: the hybrid tail, N/10, rounding, units."""
    n, b0, model, rounding = options.dataset_size, options.batch_size, stairs.model, stairs.rounding
    first = next((i for i, p in enumerate(per_span) if p.phase == "hybrid"), None)
    if first is not None:
        warnings.append(_cap_warning(stairs, per_span[first], first, cap_words,
                                     where(options.original(), per_span[first].start)))
    biggest = max(p.batch for p in per_span)
    if not options.single_pass and biggest > n / 10:
        why = (", and the proportional rule overstates the batch as B nears N (the exact rule, --rule exact, "
               "does not)" if model.rule == "proportional" and not model.is_adam else "; validate before adopting")
        warnings.append(f"batch {biggest} exceeds N/10 = {n / 10:g}: the paper stopped growing near N/10{why}")
    if options.growth_factor is not None:
        notes.append(f"integer growth: every stage's batch is {options.growth_factor}× the previous one; the LR "
                     "factor absorbs the difference from the exact target")
    if rounding != Rounding():
        notes.append(f"batches rounded to {rounding.describe()}: the LR factor absorbs the rounding, so the "
                     "realised temperature still follows the original")
        if not variant and not rounding.allows(b0):
            notes.append(f"--batch-size {b0} is not one of those batches: the plan starts at your batch {b0} "
                         f"(the original run, unchanged) and rounds only the grown batches")
    if options.schedule_unit == "step":
        notes.append("schedule read per step (once an update of the original run); the plan is indexed in samples "
                     "and the LR inside each stage follows the original step by step")
    notes.append("updates: a batch ends early only at the end of an epoch (the last partial batch is kept) or of "
                 "the run")
    notes.append(BATCHNORM_NOTE)


def _cap_warning(stairs: "Staircase", span: Span, i: int, cap_words: str, where: str) -> str:
    """The hybrid warning, in the cap line's terms: the cap that binds at piece ``i`` (the noise-scale cap
    where it is below the plan's cap, else the plan's cap, named by ``cap_words``), and the plan's cap the
    noise-scale cap rises to."""
    cap_there = stairs.cap_at(i)
    noise_there = stairs.caps is not None and stairs.caps[i] < stairs.cap
    words = CAP_WORDS["noise_scale"] if noise_there else cap_words
    named = "" if cap_words == CAP_WORDS["noise_scale"] else f" ({cap_words})"
    rises = (f"; the noise-scale cap rises with the run to the cap line's {stairs.cap}{named}, and the "
             "batch follows it" if noise_there else "")
    if cap_there <= span.batch and span.batch != cap_there:  # a cap below the batch it would grow from
        head = (f"from {where} the {words}, {cap_there}, is below the batch {span.batch}, so the batch stays at "
                f"{span.batch}")
    elif span.batch == cap_there:
        head = f"the batch reaches the cap of {cap_there} ({words}) at {where}"
    else:
        head = (f"the batch reaches the cap of {cap_there} ({words}) at {where} (batch {span.batch}: a step to "
                f"{cap_there} would be less than ×{stairs.factor:.3g})")
    return f"{head}{rises}; from there the LR carries the rest of the decay (hybrid)"


CAP_WORDS = {"device": "device memory", "max_fraction": "--max-fraction of N", "noise_scale": "noise-scale cap",
              "batch_size": "the starting batch", "run_length": "1% of the run",
              "growth": "--max-growth × the starting batch"}
