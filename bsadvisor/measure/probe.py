"""`bsadvisor.probe(target)`: gradient noise, throughput and memory cap on the user's model.

The probe takes a few optimizer steps at the target's LR and batch (to leave the
initial transient), freezes the parameters there, and measures at those fixed
parameters:

- the gradient noise scale B_simple = tr(Σ)/|G|² (docs/concepts.md eq. 10; McCandlish
  et al. 1812.06162, App. A) with the micro-batch, two-batch or per-example estimator
  (:mod:`bsadvisor.measure.noise`; statistics in :mod:`bsadvisor.core.noise`);
- the largest batch whose full training step fits (:mod:`bsadvisor.measure.memory`;
  search in :mod:`bsadvisor.core.memory`);
- examples/s of a full training step along a geometric ladder of batch sizes
  (:mod:`bsadvisor.measure.throughput`).

Everything it touches is put back bit for bit afterwards: parameters, gradients,
buffers (BatchNorm running stats), train/eval mode, and the Python, NumPy, torch and
CUDA random states, also when the user's loss raises mid-probe (:mod:`bsadvisor.measure.state`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import scipy.special  # noqa: F401  (here, not in the budget: the noise interval needs it, ~0.3 s to load)

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.noise import sqrt_table
from bsadvisor.core.probe_options import ProbeOptions
from bsadvisor.core.probe_result import MemoryResult, NoiseResult, ProbeResult, ProbeSettings
from bsadvisor.core.temperature import temperature
from bsadvisor.measure.bench import Bench, Budget, ProbeConfig
from bsadvisor.measure.memory import measure_memory_cap
from bsadvisor.measure.noise import measure_noise
from bsadvisor.measure.state import preserved_state
from bsadvisor.measure.step import clear_grads
from bsadvisor.measure.throughput import knee, machine_warnings, measure_throughput_ladder
from bsadvisor.measure.warmup import default_warmup_steps, warm_up
from bsadvisor.runtime import rng
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.distributed import resolve_device
from bsadvisor.targets.loading import load_target
from bsadvisor.targets.target import Target, check_target


def probe(target, options: Optional[ProbeOptions] = None, *, progress: Optional[Callable[[str, float], None]] = None,
          dist: Optional[Dist] = None, **fields) -> ProbeResult:
    """Measure gradient noise, memory cap and throughput of ``target`` (a Target or a TARGET string).

    ``options``: a :class:`ProbeOptions` (None: the defaults); ``fields`` are its fields as
    keywords (``probe(target, budget_seconds=3, seed=1)``), over ``options`` when both are given.
    Side-effect free: the model's parameters, grads, buffers, modes and every RNG state
    are restored bit for bit on return or on error. ``progress(phase, fraction)`` is
    called while measuring. See docs/probe.md.

    ``budget_seconds`` bounds the measuring (warmup, noise, memory, throughput) and starts
    when measuring starts: building the target (importing it, generating its data) is not
    charged to it. Without ``draws`` the budget decides how many noise draws are taken, so
    B_simple varies between runs even with the same ``seed``; ``draws=N`` takes exactly N
    draws whatever the budget and ``target_rel_ci``, which makes the noise estimate exactly
    reproducible for a fixed seed. Anything that makes the numbers doubtful (a sum-reduced
    loss, a disturbed throughput ladder, a busy machine, a warmup cut short by the budget)
    is said in ``result.warnings``.

    ``dist`` (a :class:`bsadvisor.runtime.distributed.Dist`, e.g. from ``init_from_env()``): every
    rank of the group must call ``probe`` with the same arguments; ``batch_size`` is then
    the global batch (world_size × per-device batch), each rank draws its own examples,
    and every rank returns the same result (docs/distributed.md). None: one process.
    """
    options = checks.options_object(ProbeOptions, options, fields, "probe")
    dist = dist if dist is not None else Dist()
    target, config = configure(target, dist, options)
    warnings = machine_warnings(config.device)
    with preserved_state(target.model):
        bench = Bench.open(target, config, dist, progress or (lambda phase, fraction: None), warnings)
        # One-time costs are not measuring: the first optimizer imports torch._dynamo (~2 s);
        # scipy.special (~0.3 s, for the interval) is imported with this module.
        optimizer = target.make_optimizer(lr=config.lr)
        budget = Budget.start_now(config.budget_seconds)  # the budget starts with the measuring
        steps_taken = warm_up(bench, optimizer, budget)
        del optimizer
        measured_state = bench.freeze()
        noise = measure_noise(bench, budget)
        memory = measure_memory_cap(bench, budget)
        throughput = measure_throughput_ladder(bench, budget, memory.max_batch)
        clear_grads(bench.params)
    result = assemble(target, config, noise, memory, throughput, steps_taken, budget, warnings)
    return agree(result, dist, measured_state)


def configure(target, dist: Dist, options: ProbeOptions) -> tuple[Target, ProbeConfig]:
    """The target, built and checked, and the (checked) options resolved against it (one UserError line when
    they do not fit it)."""
    if isinstance(target, str):
        target = load_target(target)
    target = check_target(target)
    dataset_size = target.dataset_size
    batch = target.batch_size if options.batch_size is None else options.batch_size
    if batch < 2:
        raise UserError(f"--batch-size must be at least 2 to measure gradient noise, got {batch}")
    if batch > dataset_size:
        raise UserError(f"--batch-size {batch} exceeds the dataset size {dataset_size}")
    min_draws, max_draws = options.min_draws, options.max_draws
    if options.draws is not None:
        min_draws = max_draws = options.draws
    device = _data_parallel_device(dist, options.estimator, batch, options.device)
    return target, ProbeConfig(
        batch_size=batch, local_batch=batch // dist.world_size, world_size=dist.world_size,
        dataset_size=dataset_size, lr=float(target.lr if options.lr is None else options.lr),
        warmup_steps=(default_warmup_steps(dataset_size, batch) if options.warmup_steps is None
                      else options.warmup_steps),
        budget_seconds=options.budget_seconds, target_rel_ci=options.target_rel_ci, estimator=options.estimator,
        micro_batches=options.micro_batches, memory_limit=options.memory_limit, seed=options.seed,
        rank_seed=rng.rank_seed(options.seed, dist.rank), min_draws=min_draws, max_draws=max_draws,
        draws=options.draws, measure_memory=options.measure_memory, measure_throughput=options.measure_throughput,
        device=resolve_device(device))


def _data_parallel_device(dist: Dist, estimator: str, batch: int, device: str) -> str:
    """Under torchrun: refuse what data parallelism cannot do, and give each rank its own device."""
    if not dist.enabled:
        return device
    if estimator != "microbatch":
        raise UserError(f"--estimator {estimator} is not supported under torchrun; use --estimator microbatch")
    if batch % dist.world_size:
        raise UserError(f"--batch-size {batch} is not a multiple of the world size {dist.world_size}; under data "
                        "parallelism the global batch is world size × per-device batch")
    if dist.device is not None and (device or "auto").lower() in ("auto", "cpu", "cuda"):
        return dist.device  # cuda:LOCAL_RANK under NCCL
    return device


def assemble(target: Target, config: ProbeConfig, noise: NoiseResult, memory: MemoryResult, throughput: list,
             warmup_steps: int, budget: Budget, warnings: list) -> ProbeResult:
    """The ProbeResult of the phases' measurements (the O(√B) table stops at the memory cap, eq. 9)."""
    noise.sqrt_table = sqrt_table(noise.b_simple, config.batch_size, memory.max_batch)
    settings = ProbeSettings(lr=config.lr, momentum=float(target.momentum), batch_size=config.batch_size,
                             dataset_size=config.dataset_size, device=str(config.device), optimizer=target.optimizer,
                             estimator=config.estimator, seed=int(config.seed), warmup_steps=warmup_steps,
                             budget_seconds=float(config.budget_seconds), target_rel_ci=float(config.target_rel_ci),
                             world_size=config.world_size, draws=config.draws)
    return ProbeResult(noise=noise, memory=memory, throughput=throughput, settings=settings,
                       temperature=temperature(config.lr, config.batch_size, config.dataset_size, target.momentum),
                       throughput_knee=knee(throughput), target=target.name,
                       wall_seconds=time.perf_counter() - budget.start, warnings=warnings)


def agree(result: ProbeResult, dist: Dist, measured_state: dict) -> ProbeResult:
    """The very same result on every rank (in one process: ``result`` with ``measured_state``).

    The numbers already agree (pooled noise, smallest cap, slowest ladder); the timings are
    the slowest rank's and the rest (the device name) rank 0's.
    """
    walls = dist.all_gather_object((result.wall_seconds, result.noise.seconds))
    main = dist.broadcast_object(dataclasses.replace(result, measured_state=None))
    main.wall_seconds = max(wall for wall, _ in walls)
    main.noise.seconds = max(seconds for _, seconds in walls)
    main.measured_state = measured_state
    return main
