"""Throughput: examples/s of a full training step along a ladder of batch sizes (docs/probe.md, "Throughput").

The ladder is B/4, B/2, B, 2B, ... up to the memory cap, timed within what is left of the
budget, in THROUGHPUT_REPEATS rounds so that a passing burst of load disturbs one timing
of a batch size, not all; each batch size reports the median and the spread. Timings say
as much about the machine as about the model, so a busy CPU (:func:`cpu_load_warning`)
and a ladder that is not monotone (:func:`ladder_warning`) are reported as warnings.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Optional

import torch

from bsadvisor.core.machine import cpu_count, load_average  # noqa: F401 (tests patch them here)
from bsadvisor.core.memory import OutOfMemory
from bsadvisor.core.probe_result import ThroughputPoint
from bsadvisor.measure.bench import Bench, Budget
from bsadvisor.measure.step import clear_grads, guarded_step, sync

THROUGHPUT_REPEATS = 3    # timings per rung; the median is reported, the spread with it
REPEAT_SECONDS = 0.03     # each timing runs steps for at least this long
KNEE_GAIN = 1.2           # the knee: the last batch where doubling still gave this much more examples/s


def measure_throughput_ladder(bench: Bench, budget: Budget, cap: int) -> list[ThroughputPoint]:
    """The ladder up to ``cap`` by the budget's deadline (empty when not measured).

    Under torchrun a data-parallel step goes at the pace of the slowest rank: every rank
    reports, at each batch all ranks measured, the lowest examples/s.
    """
    if not bench.config.measure_throughput:
        return []
    order = ladder(bench.config.local_batch, cap)
    timings, oom_at = _time_ladder(bench, order, budget.deadline)
    points = []
    for size in sorted(timings):
        if oom_at is not None and size >= oom_at:
            continue
        rates = [rate for rate, _ in timings[size]]
        median = statistics.median(rates)
        spread = (max(rates) - min(rates)) / median if median > 0 else 0.0
        points.append(ThroughputPoint(size, median, statistics.median(seconds for _, seconds in timings[size]),
                                      repeats=len(rates), spread=spread, slowest=min(rates), fastest=max(rates)))
    if oom_at is not None:
        bench.warn(f"batch {oom_at} ran out of memory in the throughput ladder although the memory search let it "
                   "through (the CPU estimate misses transient buffers), so the memory cap may be too high: set a "
                   "lower --memory-limit")
    points = slowest(bench.dist.all_gather_object(points))
    bench.warn(ladder_warning(points))
    return points


def ladder(batch: int, cap: int) -> list[int]:
    """The rungs B/4, B/2, B, 2B, ... up to ``cap`` (and ``cap`` itself when over 1.2× the last),
    in the order the first round times them: coarse rungs first (every other one, and the
    largest), so that a short budget still spans the range, then the rest. A cap below B/4
    (a device that holds less than a quarter of the batch) is a ladder of its own: [cap]."""
    rungs = []
    size = max(1, min(batch // 4, cap))
    while size <= cap:
        rungs.append(size)
        size *= 2
    if cap not in rungs and cap > rungs[-1] * 1.2:
        rungs.append(cap)
    return rungs[::2] + ([rungs[-1]] if len(rungs) % 2 == 0 else []) + rungs[1:-1:2]


def _time_ladder(bench: Bench, order: list[int], deadline: float) -> tuple[dict, Optional[int]]:
    """Timings {batch: [(examples/s, seconds per step)]} and the smallest batch that ran out of memory.

    The first round goes through ``order`` with one untimed step per rung (allocations,
    kernel selection); later rounds repeat the batches timed so far. A rung whose
    predicted cost would overrun ``deadline`` is skipped (at least two are measured).
    """
    timings: dict[int, list[tuple[float, float]]] = {}
    per_example = None  # seconds per example at the largest batch timed so far
    oom_at = None
    optimizer = bench.target.make_optimizer(lr=bench.config.lr)
    total = THROUGHPUT_REPEATS * len(order)
    try:
        for repeat in range(THROUGHPUT_REPEATS):
            for i, size in enumerate(order if repeat == 0 else sorted(timings)):
                bench.progress("throughput", min(1.0, (repeat * len(order) + i + 1) / total))
                if oom_at is not None and size >= oom_at:
                    continue
                now = time.perf_counter()
                if len(timings) >= 2:
                    step = per_example * size if per_example is not None else 0.0
                    if now + (step if repeat == 0 else 0.0) + max(step, REPEAT_SECONDS) > deadline:
                        continue  # would overrun; a smaller rung may still fit
                timing = _time_rung(bench, optimizer, size, untimed=repeat == 0)
                if timing is None:
                    oom_at = size if oom_at is None else min(oom_at, size)
                    timings.pop(size, None)
                    continue
                timings.setdefault(size, []).append(timing)
                if per_example is None or size >= max(timings):
                    per_example = timing[1] / size
    finally:
        optimizer.state.clear()
        clear_grads(bench.model.parameters())
        bench.rewind()
    return timings, oom_at


def _time_rung(bench: Bench, optimizer, size: int, untimed: bool) -> Optional[tuple[float, float]]:
    """One timing of a training step at batch ``size``: (examples/s, seconds per step), or None when
    it ran out of memory. Steps are repeated for at least REPEAT_SECONDS; ``untimed``: one step first."""
    where = f"the throughput step at batch {size}"
    target, model, device = bench.target, bench.model, bench.device
    batch = bench.batches.next(size)
    out_of_memory = False
    try:
        if untimed:
            guarded_step(target, model, optimizer, batch, where, check=False, oom=True, recipe=bench.recipe)
            sync(device)
        steps, started = 0, time.perf_counter()
        while True:
            guarded_step(target, model, optimizer, batch, where, check=False, oom=True, recipe=bench.recipe)
            steps += 1
            sync(device)
            elapsed = time.perf_counter() - started
            if elapsed >= REPEAT_SECONDS or steps >= 200:
                break
    except OutOfMemory:
        out_of_memory = True
    finally:
        batch = None
        clear_grads(model.parameters())
        bench.rewind()
    if out_of_memory:
        optimizer.state.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None
    return size * steps / elapsed, elapsed / steps


def slowest(per_rank: list) -> list:
    """Throughput points measured on every rank, each at the lowest rank's examples/s."""
    common = set.intersection(*({p.batch_size for p in points} for points in per_rank))
    out = []
    for size in sorted(common):
        mine = [next(p for p in points if p.batch_size == size) for points in per_rank]
        out.append(min(mine, key=lambda p: p.examples_per_s))
    return out


def knee(points: list) -> Optional[int]:
    """The last batch where doubling still gave KNEE_GAIN× the examples/s (None: it always did)."""
    for small, big in zip(points, points[1:]):
        if big.batch_size == 2 * small.batch_size and big.examples_per_s < KNEE_GAIN * small.examples_per_s:
            return small.batch_size
    return None


# --------------------------------------------------------------------------- are the timings sound?
def ladder_warning(points: list, shrink: float = 0.7, drop: float = 0.5) -> Optional[str]:
    """A warning when the throughput ladder (sorted by batch) is not monotone, else None.

    A bigger batch never needs less time per step: a step time below ``shrink`` × that of a
    smaller batch means the timings were disturbed. Examples/s may fall at large batches
    (caches), but not by half from one rung to the next (the step would take over 4× as
    long for 2× the work): below ``drop`` × the previous rung is flagged too.
    """
    def say(a, b) -> str:
        return (f"the throughput ladder is not monotone (batch {a.batch_size}: {a.examples_per_s:,.0f} examples/s, "
                f"batch {b.batch_size}: {b.examples_per_s:,.0f}): the timings were disturbed, e.g. by other "
                "processes or too many threads; rerun on an idle machine or with OMP_NUM_THREADS set to the free cores")

    for i, small in enumerate(points):
        for big in points[i + 1:]:
            if big.step_seconds < shrink * small.step_seconds:
                return say(small, big)
    for small, big in zip(points, points[1:]):
        if big.examples_per_s < drop * small.examples_per_s:
            return say(small, big)
    return None


def machine_warnings(device: torch.device) -> list[str]:
    """What makes every timing doubtful before anything is measured: a busy CPU."""
    if device.type != "cpu":
        return []
    warning = cpu_load_warning(torch.get_num_threads(), cpu_count(), load_average())
    return [warning] if warning else []


def cpu_load_warning(threads: int, cores: int, load: Optional[float]) -> Optional[str]:
    """A warning when the CPU is oversubscribed, else None.

    ``threads``: torch's intra-op threads; ``cores``: the cores this process may use;
    ``load``: the 1-minute load average. With more threads than free cores, OpenMP threads
    wait for each other and a step can be tens of times slower, so the throughput ladder
    (and everything timed) says more about the other processes than about the model.
    """
    if load is None or cores < 1:
        return None
    free = cores - load
    fit = max(1, int(math.floor(free + 0.5)))
    if threads > 1 and threads > fit:
        return (f"torch uses {threads} threads but only about {max(free, 0.0):.1f} of {cores} cores are free "
                f"(load average {load:.1f}): steps can be many times slower and the throughput timings "
                f"unreliable; set OMP_NUM_THREADS={fit} (or torch.set_num_threads({fit})) before probing")
    if load >= cores:
        return (f"the machine is busy (load average {load:.1f} on {cores} cores): the throughput timings will be "
                "slow and noisy; probe on an idle machine for throughput")
    return None
