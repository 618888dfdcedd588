"""``bsadvisor.validate``: a plan trained next to its original schedule, as one library call, and
:class:`Validation`, the typed document it returns (what ``bsadvisor validate`` runs and prints).

The steps, each a public function: the plan (a Plan as given, or made by
:func:`bsadvisor.recommend` from the conversion options and the target's own, as advise
makes it), refitted by ``recommend`` to the devices of a torchrun job
(runtime.validate.fit_to_devices), the runs (runtime.validate.build_runs: the original
schedule, the plan and the variants), each trained for every seed and judged paired by seed
(runtime.validate.run_validation), and, with ``options.out``, the files
(:meth:`Validation.write`: results.json, report.md, the plots).

A :class:`Validation` is frozen and typed: renderers read its attributes, and
:meth:`Validation.to_dict` is the results document (schema bsadvisor.validation/1.2) for
JSON only. :meth:`Validation.from_dict` reads one back, older schemas included (a field
they lack is None).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.documents import Document
from bsadvisor.core.errors import ArgumentTypeError, UserError
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.original import check_dataset_size
from bsadvisor.core.plan import Plan
from bsadvisor.core.recommend import recommend
from bsadvisor.core.validate_options import ValidateOptions, check_epochs
from bsadvisor.runtime import validate as engine
from bsadvisor.runtime.recipe import TargetOptions, options_for_target
from bsadvisor.targets.target import Target


@dataclass(frozen=True)
class SeedRun(Document):
    """One seed of one run: its final figures (``metric``: the eval metric, or the negated final training loss
    without one) and its records: ``history`` (one entry per epoch), ``evals`` (the curve at the
    evaluation points), ``steps`` (LR, momentum, batch of the updates), ``noise_trace`` (the noise
    monitor's points) and ``skipped_steps`` (fp16 steps a GradScaler skipped), each entry a dict as
    runtime/train.py records it."""

    seed: int
    final_train_loss: Optional[float]
    metric: Optional[float]
    updates: int
    examples: int
    wall_s: Optional[float]
    resumed_from_epoch: Optional[int] = None
    diverged_at_epoch: Optional[int] = None
    history: tuple = ()
    steps: tuple = ()
    evals: tuple = ()
    noise_trace: tuple = ()
    skipped_steps: tuple = ()


@dataclass(frozen=True)
class RunSummary(Document):
    """A run's mean ± sd over seeds of its final metric, training loss and wall time; its updates and examples."""

    metric_mean: Optional[float]
    metric_sd: Optional[float]
    final_train_loss_mean: Optional[float]
    final_train_loss_sd: Optional[float]
    updates: int
    examples: int
    wall_s_mean: Optional[float]
    wall_s_sd: Optional[float]


@dataclass(frozen=True)
class Run(Document):
    """One run (the original schedule, the plan or a variant): why it is there, the plan it followed (its
    file document), each seed's result and their summary."""

    description: str
    plan: dict
    seeds: tuple[SeedRun, ...]
    summary: RunSummary

    @classmethod
    def from_dict(cls, doc: Mapping) -> Run:
        return super().from_dict(doc, seeds=tuple(SeedRun.from_dict(s) for s in doc.get("seeds") or ()),
                                 summary=RunSummary.from_dict(doc.get("summary") or {}))


@dataclass(frozen=True)
class VariantVerdict(Document):
    """A variant's own paired verdict against the original (it does not decide the exit code)."""

    status: Optional[str]
    reason: Optional[str]
    difference: Optional[float]
    interval: Optional[tuple]
    paired: Optional[tuple]
    seeds_suggested: Optional[int] = None
    too_close: Optional[bool] = None


@dataclass(frozen=True)
class Verdict(Document):
    """The paired verdict on ``candidate`` against ``reference`` (core/verdict.py, docs/concepts.md eqs. 21–23,
    28–30): ``status`` accepted, rejected, inconclusive or indicative, the mean paired ``difference`` and its
    ``interval`` at this look, the ``margin``, the seeds that would settle it, the ``looks`` taken, the update
    and wall-time ratios (original / plan) and each variant's verdict. ``tolerance`` and ``tolerance_rule``
    are a bsadvisor.validation/1 document's (no margin then), left out of :meth:`to_dict` when None."""

    _omit_if_none: ClassVar[tuple[str, ...]] = ("tolerance", "tolerance_rule")

    status: Optional[str]
    accepted: Optional[bool]
    reference: str
    candidate: str
    reason: Optional[str]
    difference: Optional[float]
    interval: Optional[tuple]
    paired: Optional[tuple]
    sd: Optional[float]
    margin: Optional[float]
    margin_rule: Optional[str]
    confidence: Optional[float]
    method: Optional[str]
    seeds_suggested: Optional[int]
    too_close: Optional[bool]
    looks: Optional[int]
    look_seeds: Optional[tuple]
    spending_look: Optional[int]
    update_ratio: Optional[float]
    wall_ratio: Optional[float]
    variants: Mapping[str, VariantVerdict] = field(default_factory=dict)
    within_tolerance: Mapping[str, bool] = field(default_factory=dict)
    tolerance: Optional[float] = None
    tolerance_rule: Optional[str] = None

    @property
    def has_margin(self) -> bool:
        """Whether this is a paired verdict with a margin (/1.1 on); a /1 document had a tolerance only."""
        return self.margin_rule is not None

    @classmethod
    def from_dict(cls, doc: Mapping) -> Verdict:
        variants = {n: VariantVerdict.from_dict(w) for n, w in (doc.get("variants") or {}).items()}
        return super().from_dict(doc, variants=variants, within_tolerance=dict(doc.get("within_tolerance") or {}))


@dataclass(frozen=True)
class RealisedTemperature(Document):
    """Each run's realised noise temperature against samples (``series``: name → [[samples, g], ...]),
    relative to ``relative_to``, read with the temperature ``model`` described."""

    relative_to: str
    model: str
    series: Mapping[str, list]


@dataclass(frozen=True)
class Validation(Document):
    """A validation: the runs on ``target``, paired by seed, and the verdict (schema bsadvisor.validation/1.2).

    ``runs``: name → :class:`Run` (the original schedule first, then the plan and any variants);
    ``metric``: what the verdict compares ("metric", or "negative final training loss" without an
    eval metric); ``recipe``: what every run trained with; ``temperature``: the realised noise
    temperatures (None when the plan records no options to read them with); ``warnings``: said
    before the runs and recorded in the report; ``plots``: the PNG files written beside
    results.json (None until :meth:`write`).
    """

    _not_in_json: ClassVar[tuple[str, ...]] = ("write_warnings",)  # what writing said, not the document
    _omit_if_none: ClassVar[tuple[str, ...]] = ("plots",)

    schema: str
    target: str
    metric: str
    recipe: Optional[dict]
    temperature: Optional[RealisedTemperature]
    dataset_size: Optional[int]
    seeds: int
    epochs: float
    world_size: int
    runs: Mapping[str, Run]
    verdict: Verdict
    warnings: tuple[str, ...] = ()
    plots: Optional[tuple[str, ...]] = None
    #: What writing the plots said (a plot that failed); not part of the document.
    write_warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def status(self) -> Optional[str]:
        """The verdict's status: accepted, rejected, inconclusive or indicative."""
        return self.verdict.status

    def to_dict(self) -> dict:
        """The results document, as results.json and ``--json`` hold it."""
        doc = super().to_dict()
        doc["temperature"] = doc["temperature"] or {}
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping) -> Validation:
        """A results document (any bsadvisor.validation schema; a field an older one lacks is None)."""
        temp = doc.get("temperature")
        return super().from_dict(
            doc, runs={n: Run.from_dict(r) for n, r in (doc.get("runs") or {}).items()},
            verdict=Verdict.from_dict(doc.get("verdict") or {}),
            temperature=RealisedTemperature.from_dict(temp) if temp else None,
            recipe=doc.get("recipe"), world_size=doc.get("world_size", 1))

    @classmethod
    def of(cls, doc: Union[Validation, Mapping]) -> Validation:
        """``doc`` itself, or the Validation of a results document."""
        return doc if isinstance(doc, Validation) else cls.from_dict(doc)

    def write(self, out: Union[str, Path], *, resume: bool = False, overwrite: bool = False) -> Validation:
        """Write results.json, report.md and the plots (with matplotlib) into the folder ``out``: the
        Validation written (its ``plots`` set; ``write_warnings`` says why there are none when a plot
        failed).

        The rules of ``--out`` hold (runtime.validate.claim_out): a folder holding an earlier run's
        results is replaced only with ``overwrite`` (or continued with ``resume``), a file of the
        user's of a name validate writes is never replaced, and every file is written atomically and
        recorded in the folder's manifest before it is written.
        """
        with engine.claim_out(Path(out), resume=resume, overwrite=overwrite):
            return self._write_files(Path(out))

    def _write_files(self, out: Path) -> Validation:
        """The files, into a folder this run holds (claim_out)."""
        from bsadvisor.runtime.report import write_outputs  # report.py reads a Validation: no cycle at import

        doc = self.to_dict()
        warnings = write_outputs(doc, out)
        return dataclasses.replace(self, plots=tuple(doc["plots"]), write_warnings=tuple(warnings))


def validate(target, plan: Union[Plan, ConvertOptions, TargetOptions, dict, None] = None,
             options: Optional[ValidateOptions] = None, *, progress=None, dist=None, device=None,
             on_message: Optional[Callable[[str], None]] = None, **fields: Any) -> Validation:
    """Train ``plan`` next to its original schedule on ``target`` (a Target), paired by seed: a :class:`Validation`.

    ``plan``: a :class:`Plan` (made for the target's data set), or the conversion options to make
    one with :func:`bsadvisor.recommend`: a ConvertOptions, a dict of its keywords (None: not given;
    the target supplies lr, batch size, momentum and N, its recipe the schedule when none is given,
    as advise does) or what :func:`options_for_target` made of them. ``options``: a
    :class:`ValidateOptions` (None: the defaults); ``fields`` are its fields as keywords, over
    ``options``. With ``options.out`` the folder is held from before the first run (its checkpoints)
    until results.json, report.md and the plots are written (:meth:`Validation.write`). ``dist``: a
    torchrun job (bsadvisor.distributed): the plan is refitted to its devices through ``recommend``
    and every rank trains; only rank 0 writes. ``progress``: a rich Progress (a bar per run and seed).
    ``on_message``: called, before the runs, with each line to tell the user (``note: ...`` when the plan
    was refitted to the devices, ``warning: ...`` for a model with BatchNorm); they are also in the
    Validation's ``warnings``. Raises UserError when the plan does not fit the target or there is nothing to convert.
    """
    if isinstance(target, str):
        raise ArgumentTypeError(f"target must be a Target, got the string {checks.show(target)}: load it first, "
                                "bsadvisor.validate(bsadvisor.load_target(...), ...)", parameter="target")
    checks.instance("target", target, Target, "a Target (bsadvisor.load_target builds one)")
    options = checks.options_object(ValidateOptions, options, fields, "validate")
    engine.check_out(options.out, resume=options.resume, overwrite=options.overwrite)
    resolved = plan_for(target, plan)
    check_epochs(resolved.epochs, "the plan's epochs")
    say = on_message or (lambda line: None)
    if dist is not None and dist.enabled:
        resolved, change = engine.fit_to_devices(resolved, dist.world_size, options.max_micro_batch)
        if change:
            say(f"note: {change}")
    specs = engine.build_runs(resolved, options)
    warnings = [w for w in [engine.batchnorm_warning(target.model)] if w]
    for w in warnings:
        say(f"warning: {w}")
    main = dist is None or dist.is_main
    out = options.out
    holding = engine.claim_out(out, resume=options.resume, overwrite=options.overwrite,
                               checkpoints=tuple(engine.checkpoint_names(specs, options.seeds))) \
        if out is not None and main else contextlib.nullcontext()
    with holding:
        doc = engine.run_validation(target, specs, options=options, progress=progress, dist=dist, device=device,
                                    warnings=warnings)
        validation = Validation.from_dict(doc)
        if out is not None and main:
            validation = validation._write_files(Path(out))
    return validation


def plan_for(target, plan: Union[Plan, ConvertOptions, TargetOptions, dict, None]) -> Plan:
    """The plan to validate on ``target``: ``plan`` itself when it is a Plan made for the target's data set,
    else :func:`bsadvisor.recommend` of the options (completed from the target by :func:`options_for_target`
    when given as a dict or None)."""
    if isinstance(plan, Plan):
        check_dataset_size(plan, target.dataset_size)
        return plan
    if isinstance(plan, ConvertOptions):  # its noise model goes in as the trace (recommend sets the field from it)
        return recommend(dataclasses.replace(plan, noise_model=None), noise_trace=plan.noise_model)
    if plan is not None:
        checks.instance("plan", plan, (TargetOptions, dict), "a Plan, a ConvertOptions, a dict of conversion "
                        "options or None")
    prepared = plan if isinstance(plan, TargetOptions) else options_for_target(target, plan)
    if prepared.options.get("schedule") is None or not prepared.length_given:
        raise UserError("give --plan FILE, or --schedule and --epochs to convert the schedule here")
    return recommend(prepared.options)
