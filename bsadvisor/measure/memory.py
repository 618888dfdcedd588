"""The memory cap's torch side: a trial is one full training step at batch b (docs/probe.md, "Memory cap").

The search is pure (:func:`bsadvisor.core.memory.search_max_batch`, which also defines
the safety margin and the headroom); it only calls ``try_batch(b) -> peak bytes``, which
is a :class:`MemoryTrials` here:

- CUDA: peak = ``torch.cuda.max_memory_allocated`` of a real step; the limit is the device
  memory free to this process.
- CPU: peak = bytes of parameters, gradients, buffers and optimizer state, plus what
  autograd saves for backward (counted by ``saved_tensors_hooks`` during a real step)
  and the batch itself; the limit is ``--memory-limit`` (default: this process's share
  of half the available RAM).
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager

import torch

from bsadvisor.core.memory import (UNITS, OutOfMemory, format_bytes, headroom, is_oom, search_max_batch,
                                   usable_bytes)
from bsadvisor.core.errors import UserError
from bsadvisor.core.probe_result import MemoryResult
from bsadvisor.measure.bench import Bench, Budget, over_ranks
from bsadvisor.measure.step import backward, clear_grads, guarded_step, loss_of, optimizer_step
from bsadvisor.runtime.batches import map_tensors

MEMORY_SHARE = 0.4  # of what is left of the budget after the noise phase; the throughput ladder gets the rest
MAX_TRIALS = 8

# CUDA's out-of-memory message says how much more it wanted: the peak of a failed trial.
_ALLOC_RE = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")


# --------------------------------------------------------------------------- bytes on the CPU
class SavedBytes:
    """Counts the bytes autograd saves for backward (activations), deduplicated by storage."""

    def __init__(self, exclude_ptrs):
        self.exclude = set(exclude_ptrs)
        self.seen = set()
        self.bytes = 0

    def pack(self, tensor):
        try:
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.exclude and ptr not in self.seen:
                self.seen.add(ptr)
                self.bytes += storage.nbytes()
        except Exception:
            pass
        return tensor

    @staticmethod
    def unpack(tensor):
        return tensor


def state_bytes(model: torch.nn.Module, optimizer) -> int:
    """Parameters (twice when trainable: their gradients), buffers and optimizer state."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size() * (2 if p.requires_grad else 1)
    for b in model.buffers():
        total += b.numel() * b.element_size()
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def batch_bytes(batch) -> int:
    sizes = []
    map_tensors(lambda t: sizes.append(t.numel() * t.element_size()), batch)
    return sum(sizes)


# --------------------------------------------------------------------------- trials
class MemoryTrials:
    """``trials(b)`` -> peak bytes of one full training step at batch b (optimizer state included).

    Out-of-memory (CUDA, or the CPU allocator's RuntimeError) means "does not fit". Any other
    failure of the user's code is one UserError line; when it happens at a batch below
    ``first`` (the target's own batch, which did not fit), the message says so, since only
    the search for a smaller batch met it (e.g. BatchNorm cannot train on a batch of one).
    """

    def __init__(self, bench: Bench, limit_bytes: float, first: int):
        self.bench = bench
        self.limit_bytes = limit_bytes
        self.first = first
        self.parameter_storage = {p.untyped_storage().data_ptr() for p in bench.model.parameters()}
        self.too_big: list[int] = []  # batches that did not fit

    def __call__(self, batch_size: int) -> float:
        if self.bench.device.type == "cuda":
            return self._within_limit(batch_size, self._peak_cuda(batch_size))
        return self._within_limit(batch_size, self._peak_cpu(batch_size))

    def _release(self, optimizer) -> None:
        """Drop what a trial allocated (optimizer state, gradients)."""
        optimizer.state.clear()
        clear_grads(self.bench.model.parameters())

    @contextmanager
    def _trial(self):
        """A fresh optimizer for one trial; afterwards the parameters are rewound and freed."""
        target = self.bench.target
        optimizer = target.make_optimizer(lr=self.bench.config.lr, momentum=target.momentum)
        try:
            yield optimizer
        finally:
            self._release(optimizer)
            self.bench.rewind()

    def _within_limit(self, batch_size: int, peak: float) -> float:
        if peak > self.limit_bytes:
            self.too_big.append(batch_size)
            raise OutOfMemory(f"batch {batch_size} needs {peak} bytes", peak_bytes=peak)
        return float(peak)

    def _explain(self, batch_size: int, exc: UserError) -> UserError:
        if self.too_big and batch_size < self.first:
            return UserError(f"even batch {self.first} does not fit in {format_bytes(self.limit_bytes)} "
                             f"(--memory-limit less a 10% margin), and a smaller batch fails ({exc}); "
                             "raise --memory-limit")
        return exc

    def _peak_cpu(self, batch_size: int) -> float:
        where = f"memory trial at batch {batch_size}"
        target, model = self.bench.target, self.bench.model
        with self._trial() as optimizer:
            counter = SavedBytes(self.parameter_storage)
            optimizer.zero_grad(set_to_none=True)
            try:
                batch = self.bench.batches.next(batch_size)
                with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                    loss = loss_of(target, model, batch, where, check_finite=False, oom=True,
                                   recipe=self.bench.recipe)
                backward(loss, where, oom=True, recipe=self.bench.recipe)
                optimizer_step(optimizer, where, oom=True, recipe=self.bench.recipe, params=model.parameters())
            except (OutOfMemory, RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                self.too_big.append(batch_size)
                raise OutOfMemory(f"batch {batch_size} ran out of memory") from None
            except UserError as exc:
                raise self._explain(batch_size, exc) from None
            return state_bytes(model, optimizer) + counter.bytes + batch_bytes(batch)

    def _peak_cuda(self, batch_size: int) -> float:
        device = self.bench.device
        with self._trial() as optimizer:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            oom_text = None
            try:
                guarded_step(self.bench.target, self.bench.model, optimizer, self.bench.batches.next(batch_size),
                             f"memory trial at batch {batch_size}", check=False, oom=True, recipe=self.bench.recipe)
                torch.cuda.synchronize(device)
                return float(torch.cuda.max_memory_allocated(device))
            except (OutOfMemory, torch.OutOfMemoryError) as exc:  # the step's, or moving the batch
                oom_text = str(exc)
            except UserError as exc:
                raise self._explain(batch_size, exc) from None
            # Recover: drop everything this trial allocated before the cache is emptied.
            self.too_big.append(batch_size)
            match = _ALLOC_RE.search(oom_text)
            extra = float(match.group(1)) * UNITS[match.group(2).lower()] if match else 0.0
            peak = float(torch.cuda.max_memory_allocated(device)) + extra
            self._release(optimizer)
            torch.cuda.empty_cache()
            raise OutOfMemory(f"batch {batch_size} ran out of CUDA memory", peak_bytes=peak if match else None)


# --------------------------------------------------------------------------- the phase
def available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def memory_limit(bench: Bench) -> tuple[float, str]:
    """(the limit in bytes, how peaks are measured): ``--memory-limit``, else what the device offers."""
    device, limit = bench.device, bench.config.memory_limit
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return (float(limit) if limit else float(free + torch.cuda.memory_allocated(device)),
                "cuda-max-memory-allocated")
    # The processes on one node share its RAM: each gets its share of half of it.
    return (float(limit) if limit else float(available_ram() // 2 // max(1, bench.dist.local_world_size)),
            "cpu-saved-tensors")


def measure_memory_cap(bench: Bench, budget: Budget) -> MemoryResult:
    """The largest batch whose training step fits, within MEMORY_SHARE of what is left of the budget.

    Under torchrun the per-device cap is the smallest rank's, and that rank's search is reported.
    """
    config = bench.config
    limit, method = memory_limit(bench)
    if not config.measure_memory:
        return MemoryResult(max_batch=config.dataset_size, bytes_per_sample=0.0, fixed_bytes=0.0, trials=0,
                            limit_bytes=limit, headroom=0.0, limited_by="not measured", method=method)
    usable = usable_bytes(limit)
    deadline = budget.phase_deadline(MEMORY_SHARE, time.perf_counter())
    first = min(config.local_batch, config.dataset_size)
    found = search_max_batch(MemoryTrials(bench, usable, first), usable, max_batch=config.dataset_size,
                             first=first, max_trials=MAX_TRIALS, out_of_time=lambda: time.perf_counter() >= deadline)
    bench.progress("memory", 1.0)
    # Nobody reports until every rank knows whether some rank found nothing.
    if int(over_ranks(bench.dist, found.max_batch, op="min")) == 0:
        raise UserError(f"even batch {first} does not fit in {format_bytes(usable)}"
                        + (" on some rank" if bench.dist.enabled else "") + "; raise --memory-limit")
    result = MemoryResult(max_batch=found.max_batch, bytes_per_sample=found.bytes_per_sample,
                          fixed_bytes=found.fixed_bytes, trials=found.trials, limit_bytes=limit,
                          headroom=headroom(found.peak_bytes, limit), peak_bytes=found.peak_bytes,
                          limited_by=found.limited_by, method=method)
    result = min(bench.dist.all_gather_object(result), key=lambda m: m.max_batch)
    if result.limited_by == "budget":
        bench.warn(f"the memory search ran out of time: the cap {result.max_batch} fits but larger "
                   "batches were not tried; raise --budget-seconds for the true cap")
    return result
