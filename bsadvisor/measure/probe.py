"""`bsadvisor.probe(target)`: gradient noise, throughput and memory cap on the user's model.

The probe takes a few optimizer steps at the target's LR and batch (to leave the
initial transient), freezes the parameters there, and measures at those fixed
parameters:

- the gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 1812.06162,
  App. A) with the micro-batch, two-batch or per-example estimator (statistics in
  :mod:`bsadvisor.core.noise`);
- the largest batch whose full training step fits (:mod:`bsadvisor.core.memory`);
- examples/s of a full training step along a geometric ladder of batch sizes.

Everything it touches is put back bit for bit afterwards: parameters, gradients,
buffers (BatchNorm running stats), train/eval mode, and the Python, NumPy, torch and
CUDA random states, also when the user's loss raises mid-probe.
"""
from __future__ import annotations

import copy
import math
import os
import re
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Optional

import torch

from bsadvisor.core import memory as memory_mod
from bsadvisor.core import noise as noise_mod
from bsadvisor.runtime import rng as rng_mod
from bsadvisor.runtime.distributed import Dist
from bsadvisor.core.errors import UserError
from bsadvisor.core.probe_options import ESTIMATORS, check_probe_options  # noqa: F401  (ESTIMATORS: re-exported)
from bsadvisor.core.probe_result import MemoryResult, NoiseResult, ProbeResult, ProbeSettings, ThroughputPoint
from bsadvisor.runtime.step import resolve_device, to_device
from bsadvisor.core.temperature import temperature
from bsadvisor.targets.loading import load_target
from bsadvisor.targets.target import Target, check_target

# Shares of --budget-seconds, counted from the start of measuring (after the target is built):
WARMUP_SHARE = 0.2        # warmup stops here (a warning; an error with --draws)
NOISE_SHARE = 0.6         # of what is left after warmup
MEMORY_SHARE = 0.4        # of what is left after the noise phase; the throughput ladder gets the rest
THROUGHPUT_REPEATS = 3    # timings per rung; the median is reported, the spread with it
REPEAT_SECONDS = 0.03     # each timing runs steps for at least this long


# --------------------------------------------------------------------------- state
@contextmanager
def preserved_state(model: torch.nn.Module):
    """Snapshot parameters, grads, buffers, modes, requires_grad and all RNG states; restore on exit."""
    params = list(model.parameters())
    buffers = list(model.buffers())
    saved_p = [p.detach().to("cpu", copy=True) for p in params]
    saved_g = [None if p.grad is None else p.grad.detach().to("cpu", copy=True) for p in params]
    saved_rg = [p.requires_grad for p in params]
    saved_b = [b.detach().to("cpu", copy=True) for b in buffers]
    devices = [p.device for p in params]
    bdevices = [b.device for b in buffers]
    modes = [m.training for m in model.modules()]
    rng = rng_mod.get_state()
    try:
        yield
    finally:
        rng_mod.set_state(rng)
        with torch.no_grad():
            for p, dev, v, g, rg in zip(params, devices, saved_p, saved_g, saved_rg):
                if p.device != dev:
                    p.data = p.data.to(dev)
                p.copy_(v)
                p.grad = None if g is None else g.to(dev)
                p.requires_grad_(rg)
            for b, dev, v in zip(buffers, bdevices, saved_b):
                if b.device != dev:
                    b.data = b.data.to(dev)
                b.copy_(v)
        for m, t in zip(model.modules(), modes):
            m.training = t


class _Restorer:
    """Cheap in-device snapshot of parameters+buffers to rewind between measurements."""

    def __init__(self, model):
        self.tensors = list(model.parameters()) + list(model.buffers())
        self.saved = [t.detach().clone() for t in self.tensors]

    def __call__(self):
        with torch.no_grad():
            for t, v in zip(self.tensors, self.saved):
                t.copy_(v)

    def cpu_state(self, model) -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- data
class _Batches:
    """Random batches without replacement from the training set, via a private generator."""

    def __init__(self, target: Target, device: torch.device, seed: int):
        self.target = target
        self.device = device
        self.n = target.dataset_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(self.n, generator=self.gen)
        self.pos = 0
        ds = target.train_dataset
        self.tensors = ds.tensors if (target.collate_fn is None and isinstance(ds, torch.utils.data.TensorDataset)) else None
        self.examples = 0

    def indices(self, size: int) -> torch.Tensor:
        if self.pos + size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + size]
        self.pos += size
        self.examples += size
        return idx

    def fetch(self, idx: torch.Tensor):
        if self.tensors is not None:
            batch = tuple(t[idx] for t in self.tensors)
        else:
            try:
                batch = self.target.collate([self.target.train_dataset[int(i)] for i in idx])
            except Exception as exc:
                raise UserError(f"loading a batch from train_dataset failed: {type(exc).__name__}: {exc}") from None
        return to_device(batch, self.device)

    def next(self, size: int):
        return self.fetch(self.indices(size))


def _slice(batch, lo: int, hi: int):
    """Rows lo:hi of every tensor in a batch (tuple/list/dict of tensors with a leading batch dim)."""
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, (list, tuple)):
        out = [_slice(x, lo, hi) for x in batch]
        return type(batch)(*out) if hasattr(batch, "_fields") else type(batch)(out)
    if isinstance(batch, dict):
        return {k: _slice(v, lo, hi) for k, v in batch.items()}
    return batch


def _failure(exc: BaseException, what: str, where: str, oom: bool) -> Exception:
    """The exception to raise for a failure of the user's code: out-of-memory errors become
    :class:`memory.OutOfMemory` when the caller handles them (``oom``: memory trials, the
    throughput ladder), everything else one UserError line naming the step."""
    if memory_mod.is_oom(exc):
        if oom:
            return memory_mod.OutOfMemory(f"{type(exc).__name__}: {exc}")
        return UserError(f"ran out of memory at {where} ({type(exc).__name__}: {_first_line(exc)}); "
                         "lower --batch-size or free memory")
    return UserError(f"{what} {type(exc).__name__} at {where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _loss(target: Target, model, batch, where: str, check_finite: bool = True, oom: bool = False) -> torch.Tensor:
    err = None
    try:
        loss = target.loss_fn(model, batch)
    except UserError:
        raise
    except Exception as exc:  # raised outside this block: no context holding the failed step's tensors
        err = _failure(exc, "loss_fn raised", where, oom)
    if err is not None:
        raise err
    if not isinstance(loss, torch.Tensor):
        raise UserError(f"loss_fn returned {type(loss).__name__} at {where}, not a tensor; return the mean loss as a scalar tensor")
    if loss.numel() != 1:
        raise UserError(f"loss_fn returned a tensor of shape {tuple(loss.shape)} at {where}, not a scalar; "
                        "reduce it with .mean()")
    if not loss.requires_grad:
        raise UserError(f"loss_fn returned a tensor without grad at {where}; compute it from the model's output")
    if check_finite and not torch.isfinite(loss.detach()).all():
        raise UserError(f"loss is not finite ({float(loss.detach().reshape(()))}) at {where}; "
                        "lower --lr or check the data")
    return loss.reshape(())


def _backward(loss: torch.Tensor, where: str, oom: bool = False) -> None:
    err = None
    try:
        loss.backward()
    except UserError:
        raise
    except Exception as exc:
        err = _failure(exc, "backward raised", where, oom)
    if err is not None:
        raise err


def _opt_step(opt, where: str, oom: bool = False) -> None:
    err = None
    try:
        opt.step()
    except UserError:
        raise
    except Exception as exc:
        err = _failure(exc, "the optimizer step raised", where, oom)
    if err is not None:
        raise err


# --------------------------------------------------------------------------- noise
def _grads(params) -> list:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def _sq_norm(tensors) -> torch.Tensor:
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float64) if tensors else []
    return torch.stack(list(norms)).square().sum()


def _check_finite(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise UserError(f"gradient is not finite at {where}; lower --lr or check the model for overflow")


def _draw_microbatch(target, model, params, batches, k: int, b: int, draw: int,
                     dist: Optional[Dist] = None, flags: Optional[Callable[[], list]] = None):
    """One draw: k micro-batches of b from one batch of B = k·b, all at the same θ.

    Returns (|G_b|², |G_B|²): the mean of the k micro-batch squared norms and the
    squared norm of their mean (McCandlish et al. App. A.1), accumulated in float64.

    Under torch.distributed (``dist.enabled``) each rank computes its own k micro-batches
    and one all-reduce pools them: |G_b|² is the mean over all world·k micro-batch squared
    norms and |G_B|² the squared norm of the all-reduced mean gradient (B = world·k·b), the
    replica estimator of App. A folded into the micro-batch one (docs/distributed.md).
    ``flags()`` (floats, e.g. "my clock is past the deadline") are summed over ranks in the
    same all-reduce so that all ranks take the same stop decision; then the return value is
    ((|G_b|², |G_B|²), summed flags).
    """
    if dist is not None and dist.enabled:
        return _draw_microbatch_dist(target, model, params, batches, k, b, draw, dist, flags)
    acc, norms, losses = _microbatch_grads(target, model, params, batches.next(k * b), k, b,
                                           f"noise draw {draw + 1}")
    torch._foreach_div_(acc, float(k))
    small = torch.stack(norms).square().sum() / k
    vals = torch.stack([small, _sq_norm(acc), torch.stack(losses).double().sum()]).tolist()
    if not math.isfinite(vals[2]):
        bad = next(j for j, v in enumerate(torch.stack(losses).tolist()) if not math.isfinite(v))
        raise UserError(f"loss is not finite at noise draw {draw + 1}, micro-batch {bad + 1}; "
                        "lower --lr or check the data")
    _check_finite(vals[0] + vals[1], f"noise draw {draw + 1}")
    return vals[0], vals[1]


def _microbatch_grads(target, model, params, batch, k: int, b: int, draw_name: str, suffix: str = ""):
    """Gradients of k micro-batches of size b at fixed θ: (sum of gradients in float64,
    their norms, their losses). Losses are checked by the caller, all at once."""
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms, losses = [], []
    for j in range(k):
        for p in params:
            p.grad = None
        where = f"{draw_name}, micro-batch {j + 1}{suffix}"
        loss = _loss(target, model, _slice(batch, j * b, (j + 1) * b), where, check_finite=False)
        _backward(loss, where)
        losses.append(loss.detach())
        g = _grads(params)
        norms.extend(torch._foreach_norm(g, 2, dtype=torch.float64))
        torch._foreach_add_(acc, g)
    return acc, norms, losses


def _draw_microbatch_dist(target, model, params, batches, k, b, draw, dist, flags):
    acc, norms, losses = _microbatch_grads(target, model, params, batches.next(k * b), k, b,
                                           f"noise draw {draw + 1}", f" on rank {dist.rank}")
    extra = [float(x) for x in (flags() if flags is not None else [])]
    local = torch.stack([torch.stack(norms).square().sum(), torch.stack(losses).double().sum()]).cpu()
    tail = torch.cat([local, torch.tensor(extra, dtype=torch.float64)])
    flat = torch.cat([a.reshape(-1) for a in acc] + [tail.to(acc[0].device)])
    flat = dist.all_reduce(flat)  # one collective per draw: gradient sum, norm sum, loss sum, flags
    total = k * dist.world_size
    n_tail = tail.numel()
    mean_grad = flat[:-n_tail] / total
    tail = flat[-n_tail:].cpu()
    small = float(tail[0]) / total
    big = float(mean_grad.square().sum())
    if not math.isfinite(float(tail[1])):  # the same verdict on every rank
        raise UserError(f"loss is not finite at noise draw {draw + 1} on some rank; lower --lr or check the data")
    _check_finite(small + big, f"noise draw {draw + 1}")
    return (small, big), tail[2:].tolist()


def _draw_two_batch(target, model, params, batches, b: int, B: int, draw: int) -> tuple[float, float]:
    """One draw: independent batches of b and B at the same θ (McCandlish et al. App. A)."""
    out = []
    for size, name in ((b, "small"), (B, "big")):
        for p in params:
            p.grad = None
        where = f"noise draw {draw + 1}, {name} batch"
        _backward(_loss(target, model, batches.next(size), where), where)
        out.append(float(_sq_norm(_grads(params))))
    _check_finite(out[0] + out[1], f"noise draw {draw + 1}")
    return out[0], out[1]


class _PerExample:
    """Per-example gradients with torch.func (functional_call + vmap + grad) on a copy of the model."""

    def __init__(self, target, model):
        from torch.func import functional_call, grad, vmap

        self.model = copy.deepcopy(model)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            raise UserError("the per-example estimator cannot handle BatchNorm (a batch of one has no statistics); "
                            "use --estimator microbatch")
        model_copy = self.model

        def loss_one(params, buffers, item):
            single = _unsqueeze(item)
            return target.loss_fn(_Functional(model_copy, params, buffers, functional_call), single)

        self.fn = vmap(grad(loss_one), in_dims=(None, None, 0), randomness="different")

    def grads(self, batch, where: str) -> list:
        params = {n: p.detach() for n, p in self.model.named_parameters() if n in self.names}
        try:
            g = self.fn(params, self.buffers, batch)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"per-example gradients failed at {where} ({type(exc).__name__}: {exc}); "
                            "use --estimator microbatch") from None
        return [g[n] for n in self.names]


class _Functional(torch.nn.Module):
    """Calls the copied model with given parameters, so the user's loss_fn(model, batch) works under vmap."""

    def __init__(self, model, params, buffers, functional_call):
        super().__init__()
        object.__setattr__(self, "_m", model)
        object.__setattr__(self, "_state", {**buffers, **params})
        object.__setattr__(self, "_fc", functional_call)

    def forward(self, *args, **kwargs):
        return self._fc(self._m, self._state, args, kwargs)


def _unsqueeze(item):
    if isinstance(item, torch.Tensor):
        return item.unsqueeze(0)
    if isinstance(item, (list, tuple)):
        return type(item)(_unsqueeze(x) for x in item) if not hasattr(item, "_fields") else type(item)(*[_unsqueeze(x) for x in item])
    if isinstance(item, dict):
        return {k: _unsqueeze(v) for k, v in item.items()}
    return item


def _draw_per_example(pe: _PerExample, batches, B: int, draw: int) -> tuple[float, float]:
    where = f"noise draw {draw + 1}"
    g = pe.grads(batches.next(B), where)  # each [B, *shape]
    small = sum(float(torch.linalg.vector_norm(x.reshape(B, -1), dim=1, dtype=torch.float64).square().sum()) for x in g) / B
    big = sum(float(torch.linalg.vector_norm(x.to(torch.float64).mean(0)).square()) for x in g)
    _check_finite(small + big, where)
    return small, big


# --------------------------------------------------------------------------- training step
def _train_step(target, model, opt, batch, where: str, check: bool = True, dist: Optional[Dist] = None,
                oom: bool = False):
    """One optimizer step; a failure of the user's code is one UserError line naming ``where``
    (``check``: also refuse a non-finite loss; ``oom``: let out-of-memory through as
    :class:`memory.OutOfMemory`)."""
    opt.zero_grad(set_to_none=True)
    loss = _loss(target, model, batch, where, check_finite=check, oom=oom)
    _backward(loss, where, oom)
    if dist is not None and dist.enabled:
        dist.average_grads([p for p in model.parameters() if p.requires_grad])
    _opt_step(opt, where, oom)
    return loss


class _SavedBytes:
    """Counts the bytes autograd saves for backward (activations), deduplicated by storage."""

    def __init__(self, exclude_ptrs):
        self.exclude = set(exclude_ptrs)
        self.seen = set()
        self.bytes = 0

    def pack(self, t):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in self.exclude and ptr not in self.seen:
                self.seen.add(ptr)
                self.bytes += st.nbytes()
        except Exception:
            pass
        return t

    @staticmethod
    def unpack(t):
        return t


def _state_bytes(model, opt) -> int:
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size() * (2 if p.requires_grad else 1)
    for b in model.buffers():
        total += b.numel() * b.element_size()
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def _batch_bytes(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, (list, tuple)):
        return sum(_batch_bytes(b) for b in batch)
    if isinstance(batch, dict):
        return sum(_batch_bytes(b) for b in batch.values())
    return 0


_ALLOC_RE = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")


def _make_try_batch(target, model, batches, rewind, device, limit_bytes, lr, momentum, first: int):
    """try_batch(b) -> peak bytes of one full training step at batch b (optimizer state included).

    Out-of-memory (CUDA, or the CPU allocator's RuntimeError) means "does not fit". Any other
    failure of the user's code is one UserError line; when it happens at a batch below
    ``first`` (the target's own batch, which did not fit), the message says so, since only
    the search for a smaller batch met it (e.g. BatchNorm cannot train on a batch of one).
    """
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    too_big: list[int] = []  # batches that did not fit

    def release(opt) -> None:
        """Drop what a trial allocated (optimizer state, gradients)."""
        opt.state.clear()
        for p in model.parameters():
            p.grad = None

    @contextmanager
    def trial():
        """A fresh optimizer for one trial; afterwards the parameters are rewound and freed."""
        opt = target.make_optimizer(lr=lr, momentum=momentum)
        try:
            yield opt
        finally:
            release(opt)
            rewind()

    def within_limit(b: int, peak: float) -> float:
        if peak > limit_bytes:
            too_big.append(b)
            raise memory_mod.OutOfMemory(f"batch {b} needs {peak} bytes", peak_bytes=peak)
        return float(peak)

    def explain(b: int, exc: UserError) -> UserError:
        if too_big and b < first:
            return UserError(f"even batch {first} does not fit in {memory_mod.format_bytes(limit_bytes)} "
                             f"(--memory-limit less a 10% margin), and a smaller batch fails ({exc}); "
                             "raise --memory-limit")
        return exc

    def try_cpu(b: int) -> float:
        where = f"memory trial at batch {b}"
        with trial() as opt:
            counter = _SavedBytes(exclude)
            opt.zero_grad(set_to_none=True)
            try:
                batch = batches.next(b)
                with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                    loss = _loss(target, model, batch, where, check_finite=False, oom=True)
                _backward(loss, where, oom=True)
                _opt_step(opt, where, oom=True)
            except (memory_mod.OutOfMemory, RuntimeError, MemoryError) as exc:
                if not memory_mod.is_oom(exc):
                    raise
                too_big.append(b)
                raise memory_mod.OutOfMemory(f"batch {b} ran out of memory") from None
            except UserError as exc:
                raise explain(b, exc) from None
            peak = _state_bytes(model, opt) + counter.bytes + _batch_bytes(batch)
        return within_limit(b, peak)

    def try_cuda(b: int) -> float:
        with trial() as opt:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            oom_text = None
            try:
                _train_step(target, model, opt, batches.next(b), f"memory trial at batch {b}", check=False, oom=True)
                torch.cuda.synchronize(device)
                peak = float(torch.cuda.max_memory_allocated(device))
            except (memory_mod.OutOfMemory, torch.OutOfMemoryError) as exc:  # the step's, or moving the batch
                oom_text = str(exc)
            except UserError as exc:
                raise explain(b, exc) from None
            if oom_text is not None:
                # Recover: drop everything this trial allocated before the cache is emptied.
                too_big.append(b)
                m = _ALLOC_RE.search(oom_text)
                extra = float(m.group(1)) * memory_mod.UNITS[m.group(2).lower()] if m else 0.0
                peak = float(torch.cuda.max_memory_allocated(device)) + extra
                release(opt)
                torch.cuda.empty_cache()
                raise memory_mod.OutOfMemory(f"batch {b} ran out of CUDA memory", peak_bytes=peak if m else None)
        return within_limit(b, peak)

    return try_cuda if device.type == "cuda" else try_cpu


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- main
def default_warmup_steps(dataset_size: int, batch_size: int) -> int:
    """About 2% of an epoch, between 1 and 50 steps."""
    return int(max(1, min(50, round(0.02 * dataset_size / batch_size))))


def probe(target, *, device: str = "auto", batch_size: Optional[int] = None, lr: Optional[float] = None,
          warmup_steps: Optional[int] = None, budget_seconds: float = 12.0, target_rel_ci: float = 0.10,
          estimator: str = "microbatch", micro_batches: int = 8, memory_limit: Optional[float] = None,
          seed: int = 0, min_draws: int = 10, max_draws: Optional[int] = None, draws: Optional[int] = None,
          measure_memory: bool = True, measure_throughput: bool = True,
          progress: Optional[Callable[[str, float], None]] = None, dist: Optional[Dist] = None) -> ProbeResult:
    """Measure gradient noise, memory cap and throughput of ``target`` (a Target or a TARGET string).

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
    opts = check_probe_options(batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                               budget_seconds=budget_seconds, target_rel_ci=target_rel_ci, estimator=estimator,
                               micro_batches=micro_batches, memory_limit=memory_limit, seed=seed, draws=draws)
    budget_seconds, target_rel_ci, seed = opts["budget_seconds"], opts["target_rel_ci"], opts["seed"]
    micro_batches, memory_limit, draws = opts["micro_batches"], opts["memory_limit"], opts["draws"]
    if isinstance(target, str):
        target = load_target(target)
    target = check_target(target)
    n = target.dataset_size
    B = target.batch_size if opts["batch_size"] is None else opts["batch_size"]
    if B < 2:
        raise UserError(f"--batch-size must be at least 2 to measure gradient noise, got {B}")
    if B > n:
        raise UserError(f"--batch-size {B} exceeds the dataset size {n}")
    lr_ = float(target.lr if opts["lr"] is None else opts["lr"])
    warm = default_warmup_steps(n, B) if opts["warmup_steps"] is None else opts["warmup_steps"]
    if draws is not None:
        min_draws = max_draws = draws
    D = dist if dist is not None else Dist()
    K = D.world_size
    if K > 1:
        if estimator != "microbatch":
            raise UserError(f"--estimator {estimator} is not supported under torchrun; use --estimator microbatch")
        if B % K:
            raise UserError(f"--batch-size {B} is not a multiple of the world size {K}; under data parallelism "
                            "the global batch is world size × per-device batch")
        if D.device is not None and (device or "auto").lower() in ("auto", "cpu", "cuda"):
            device = D.device  # cuda:LOCAL_RANK under NCCL
    B_loc = B // K  # per-device batch (B itself in one process)
    rank_seed = rng_mod.rank_seed(seed, D.rank)  # ranks draw different examples
    dev = resolve_device(device)
    progress = progress or (lambda phase, frac: None)
    model = target.model
    warnings: list[str] = []
    if dev.type == "cpu":
        w = cpu_load_warning(torch.get_num_threads(), _cpu_count(), _load_average())
        if w:
            warnings.append(w)

    with preserved_state(model):
        rng_mod.seed_everything(rank_seed)
        model.to(dev)
        model.train()
        D.broadcast_module(model)  # every rank starts from rank 0's θ
        batches = _Batches(target, dev, rank_seed)
        params = [p for p in model.parameters() if p.requires_grad]
        # One-time costs are not measuring: the first optimizer imports torch._dynamo (~2 s),
        # the interval needs scipy.stats (~1 s).
        opt = target.make_optimizer(lr=lr_)
        import scipy.stats  # noqa: F401
        t_start = time.perf_counter()  # the budget starts with the measuring
        deadline = t_start + budget_seconds

        # 1. warmup: leave the initial transient at the target's LR and batch, within its share of the budget.
        if warm:
            warm_deadline = t_start + WARMUP_SHARE * budget_seconds
            done = 0
            for step in range(warm):
                _train_step(target, model, opt, batches.next(B_loc), f"warmup step {step + 1}", dist=D)
                if not all(torch.isfinite(p).all() for p in params):
                    raise UserError(f"parameters became non-finite at warmup step {step + 1}; lower --lr")
                done = step + 1
                progress("warmup", done / warm)
                late = time.perf_counter() >= warm_deadline
                if K > 1:  # every rank stops at the same step
                    late = float(D.all_reduce(torch.tensor([float(late)], dtype=torch.float64))[0]) > 0
                if late and done < warm:
                    break
            for p in params:
                p.grad = None
            if done < warm:
                if draws is not None:
                    raise UserError(f"warmup reached only {done} of {warm} steps within its {WARMUP_SHARE:.0%} of "
                                    "--budget-seconds; --draws needs the whole warmup for a reproducible result: "
                                    "raise --budget-seconds or lower --warmup-steps")
                warnings.append(f"warmup stopped after {done} of {warm} steps ({WARMUP_SHARE:.0%} of --budget-seconds), "
                                "so the noise was measured earlier in training than asked: raise --budget-seconds "
                                "or lower --warmup-steps")
                warm = done
        del opt
        D.broadcast_module(model)  # identical θ on every rank even if kernels are not deterministic
        rewind = _Restorer(model)
        measured_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        batches.examples = 0  # count only the examples the measurements use

        # 2. gradient noise at fixed θ.
        t_noise = time.perf_counter()
        noise_deadline = t_noise + NOISE_SHARE * max(0.0, deadline - t_noise)
        k = micro_batches
        if K > 1:
            # Spread one draw's micro-batches over the ranks: k_loc per rank, b each; the
            # all-reduced gradient is the big batch B_big = K·k_loc·b.
            k_loc = max(1, min(k // K, B // K))
            b_small = max(1, B // (K * k_loc))
            B_big = K * k_loc * b_small

            def late_flags():
                now_ = time.perf_counter()
                return [float(now_ >= noise_deadline), float(now_ >= deadline)]
        elif estimator == "per-example":
            b_small, B_big = 1, B
            pe = _PerExample(target, model)
        else:
            b_small = max(1, B // k)
            k = max(2, min(k, B // b_small))
            B_big = k * b_small if estimator == "microbatch" else B
        gb2, gB2 = [], []
        has_buffers = any(True for _ in model.buffers())
        stats = None
        draw = 0
        limit_draws = max_draws if max_draws is not None else 100000
        while draw < limit_draws:
            late = None
            if K > 1:
                v, late = _draw_microbatch(target, model, params, batches, k_loc, b_small, draw, dist=D,
                                           flags=late_flags)
            elif estimator == "microbatch":
                v = _draw_microbatch(target, model, params, batches, k, b_small, draw)
            elif estimator == "two-batch":
                v = _draw_two_batch(target, model, params, batches, b_small, B_big, draw)
            else:
                v = _draw_per_example(pe, batches, B_big, draw)
            if has_buffers:
                rewind()  # buffers (BatchNorm running stats) back to θ's
            gb2.append(v[0])
            gB2.append(v[1])
            draw += 1
            now = time.perf_counter()
            if draws is not None:  # a fixed number of draws: no clock decides anything
                progress("noise", draw / draws)
                continue
            # Under torchrun the clocks are pooled in the draw's all-reduce: any rank late → all stop.
            past_noise, past_all = (late[0] > 0, late[1] > 0) if late is not None else (now >= noise_deadline,
                                                                                           now >= deadline)
            if draw >= min_draws:
                stats = noise_mod.estimate(gb2, gB2, b_small, B_big)
                rel = stats.rel_halfwidth
                progress("noise", min(1.0, max((now - t_noise) / max(noise_deadline - t_noise, 1e-9),
                                               (target_rel_ci / rel) ** 2 if rel > 0 else 1.0)))
                if rel <= target_rel_ci or past_noise:
                    break
            elif past_all:
                break
        for p in params:
            p.grad = None
        if stats is None or stats.draws != len(gb2):
            if len(gb2) < 2:
                raise UserError("the budget ran out before two noise draws; raise --budget-seconds")
            stats = noise_mod.estimate(gb2, gB2, b_small, B_big)
        noise_examples = int(D.all_reduce(torch.tensor([batches.examples], dtype=torch.float64))[0]) if K > 1 \
            else batches.examples
        relative = math.sqrt(stats.b_simple / B) if stats.b_simple > 0 else None
        noise_seconds = time.perf_counter() - t_noise
        w = _sum_reduction_warning(target, model, params, batches, B_loc, micro_batches)
        if has_buffers:
            rewind()
        if w:
            warnings.append(w)

        # 3. memory cap, within its share of what is left.
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            limit = float(memory_limit) if memory_limit else float(free + torch.cuda.memory_allocated(dev))
            method = "cuda-max-memory-allocated"
        else:
            # K processes on one node share its RAM: each gets its share of half of it.
            limit = float(memory_limit) if memory_limit else float(_available_ram() // 2 // max(1, D.local_world_size))
            method = "cpu-saved-tensors"
        limit_eff = 0.9 * limit  # safety margin
        if measure_memory:
            t_mem = time.perf_counter()
            mem_deadline = t_mem + MEMORY_SHARE * max(0.0, deadline - t_mem)
            first = min(B_loc, n)
            try_batch = _make_try_batch(target, model, batches, rewind, dev, limit_eff, lr_, target.momentum, first)
            search = memory_mod.search_max_batch(try_batch, limit_eff, max_batch=n, first=first, max_trials=8,
                                                 out_of_time=lambda: time.perf_counter() >= mem_deadline)
            progress("memory", 1.0)
            if K > 1:  # nobody reports until every rank knows whether some rank found nothing
                fits = int(D.all_reduce(torch.tensor([search.max_batch], dtype=torch.float64), op="min")[0])
            else:
                fits = search.max_batch
            if fits == 0:
                raise UserError(f"even batch {first} does not fit in {memory_mod.format_bytes(limit_eff)}"
                                + (" on some rank" if K > 1 else "") + "; raise --memory-limit")
            mem = MemoryResult(max_batch=search.max_batch, bytes_per_sample=search.bytes_per_sample,
                               fixed_bytes=search.fixed_bytes, trials=search.trials, limit_bytes=limit,
                               headroom=1.0 - search.peak_bytes / limit, peak_bytes=search.peak_bytes,
                               limited_by=search.limited_by, method=method)
            if K > 1:  # the per-device cap is the smallest rank's (all_reduce MIN); report that rank's search
                mem = min(D.all_gather_object(mem), key=lambda m: m.max_batch)
            if mem.limited_by == "budget":
                warnings.append(f"the memory search ran out of time: the cap {mem.max_batch} fits but larger "
                                "batches were not tried; raise --budget-seconds for the true cap")
        else:
            mem = MemoryResult(max_batch=n, bytes_per_sample=0.0, fixed_bytes=0.0, trials=0, limit_bytes=limit,
                               headroom=0.0, limited_by="not measured", method=method)

        # 4. throughput ladder B/4, B/2, B, 2B, ... up to the cap, within what is left of the budget.
        points: list[ThroughputPoint] = []
        if measure_throughput:
            points, w = _throughput_ladder(target, model, batches, rewind, dev, lr_, B_loc, mem.max_batch,
                                           deadline, progress)
            if w:
                warnings.append(w)
            if K > 1:  # a data-parallel step goes at the pace of the slowest rank
                points = _slowest(D.all_gather_object(points))
            w = ladder_warning(points)
            if w:
                warnings.append(w)
        knee = None
        for a, b2 in zip(points, points[1:]):
            if b2.batch_size == 2 * a.batch_size and b2.examples_per_s < 1.2 * a.examples_per_s:
                knee = a.batch_size
                break
        for p in params:
            p.grad = None

    sqrt_rows = noise_mod.sqrt_table(stats.b_simple, B, mem.max_batch)
    noise = NoiseResult(b_simple=stats.b_simple, ci90=stats.ci90, trace_sigma=stats.trace_sigma,
                        grad_sq_norm=stats.grad_sq_norm, examples=noise_examples, draws=stats.draws,
                        micro_batch=b_small, big_batch=B_big, ci_method=stats.ci_method,
                        converged=stats.rel_halfwidth <= target_rel_ci, relative_noise=relative,
                        sqrt_table=sqrt_rows, seconds=noise_seconds)
    common = dict(lr=lr_, momentum=float(target.momentum), batch_size=B, dataset_size=n, device=str(dev),
                  optimizer=target.optimizer, estimator=estimator, seed=int(seed), warmup_steps=warm,
                  budget_seconds=float(budget_seconds), target_rel_ci=float(target_rel_ci))
    settings = ProbeSettings(**common, world_size=K, draws=draws)
    result = ProbeResult(noise=noise, memory=mem, throughput=points, settings=settings,
                         temperature=temperature(lr_, B, n, target.momentum), throughput_knee=knee,
                         target=target.name, wall_seconds=time.perf_counter() - t_start,
                         measured_state=measured_state, warnings=warnings)
    if K > 1:
        # The numbers already agree (pooled noise, MIN cap, slowest ladder); the timings and the
        # device name are rank 0's, so that every rank returns the very same result.
        walls = D.all_gather_object((result.wall_seconds, noise_seconds))
        main = D.broadcast_object(_without_state(result))
        main.wall_seconds = max(w for w, _ in walls)
        main.noise.seconds = max(s for _, s in walls)
        main.measured_state = measured_state
        result = main
    return result


# --------------------------------------------------------------------------- checks of the measurements
def _sum_reduction_warning(target, model, params, batches, B: int, k: int) -> Optional[str]:
    """A warning if ``loss_fn`` sums over the batch instead of averaging, else None.

    For a mean loss the gradient of a batch is the mean of the gradients of its k equal
    micro-batches; for a summed loss it is their sum, k times larger. So the ratio
    |∇L(batch)| / |mean of the micro-batch gradients| is 1 for a mean loss (up to batch
    effects such as BatchNorm) and k for a sum; above √k the loss is called sum-reduced.
    A summed loss scales the gradient with the batch, which breaks the assumptions behind
    B_simple's estimators (E|G_b|² = |G|² + tr(Σ)/b holds for mean gradients), the
    temperature lr·N/B and every LR the advice derives from it.
    """
    if B < 2:
        return None
    k = max(2, min(k, B))
    b = B // k
    where = "the loss-reduction check"
    batch = batches.next(k * b)
    acc, _, _ = _microbatch_grads(target, model, params, batch, k, b, where)
    for p in params:
        p.grad = None
    _backward(_loss(target, model, batch, where, check_finite=False), where)
    full = float(_sq_norm(_grads(params)))
    for p in params:
        p.grad = None
    torch._foreach_div_(acc, float(k))
    mean_micro = float(_sq_norm(acc))
    if not (math.isfinite(full) and math.isfinite(mean_micro) and mean_micro > 0):
        return None
    ratio = math.sqrt(full / mean_micro)
    if ratio <= math.sqrt(k):
        return None
    return (f"loss_fn looks sum-reduced: the gradient of a batch of {k * b} is {ratio:.1f}× the mean gradient of "
            f"its {k} micro-batches (1× for a mean loss, {k}× for a sum); bsadvisor assumes loss_fn returns the "
            "mean loss over the batch, so B_simple, the temperature and the advised LRs are off: reduce with .mean()")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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


def _throughput_ladder(target, model, batches, rewind, dev, lr: float, B: int, cap: int, deadline: float,
                       progress) -> tuple[list, Optional[str]]:
    """Examples/s of a full training step at B/4, B/2, B, 2B, ... up to ``cap``, by ``deadline``.

    The ladder is timed in THROUGHPUT_REPEATS rounds, so the timings of one batch size are
    spread over the phase and a passing burst of load disturbs one of them, not all; each
    batch size reports the median and the relative spread of its timings. The first round
    takes the coarse rungs first (every other one, and the cap), so that a short budget still
    spans the range, with one untimed step per rung (allocations, kernel selection); a rung
    whose predicted cost would overrun the deadline is skipped (at least two are measured).
    """
    ladder = []
    bs = max(1, B // 4)
    while bs <= cap:
        ladder.append(bs)
        bs *= 2
    if cap not in ladder and cap > ladder[-1] * 1.2:
        ladder.append(cap)
    order = ladder[::2] + ([ladder[-1]] if len(ladder) % 2 == 0 else []) + ladder[1:-1:2]
    timings: dict[int, list[tuple[float, float]]] = {}  # batch -> [(examples/s, seconds per step)]
    per_example = None  # seconds per example at the largest batch timed so far
    oom_at = None
    opt = target.make_optimizer(lr=lr)
    total = THROUGHPUT_REPEATS * len(order)
    try:
        for rnd in range(THROUGHPUT_REPEATS):
            for i, bs in enumerate(order if rnd == 0 else sorted(timings)):
                progress("throughput", min(1.0, (rnd * len(order) + i + 1) / total))
                if oom_at is not None and bs >= oom_at:
                    continue
                now = time.perf_counter()
                if len(timings) >= 2:
                    step = per_example * bs if per_example is not None else 0.0
                    if now + (step if rnd == 0 else 0.0) + max(step, REPEAT_SECONDS) > deadline:
                        continue  # would overrun; a smaller rung may still fit
                t = _time_rung(target, model, opt, batches, rewind, dev, bs, untimed=rnd == 0)
                if t is None:
                    oom_at = bs if oom_at is None else min(oom_at, bs)
                    timings.pop(bs, None)
                    continue
                timings.setdefault(bs, []).append(t)
                if per_example is None or bs >= max(timings):
                    per_example = t[1] / bs
    finally:
        opt.state.clear()
        for p in model.parameters():
            p.grad = None
        rewind()
    points = []
    for bs in sorted(timings):
        if oom_at is not None and bs >= oom_at:
            continue
        rates = [r for r, _ in timings[bs]]
        med = statistics.median(rates)
        points.append(ThroughputPoint(bs, med, statistics.median(st for _, st in timings[bs]), repeats=len(rates),
                                      spread=(max(rates) - min(rates)) / med if med > 0 else 0.0))
    warning = None
    if oom_at is not None:
        warning = (f"batch {oom_at} ran out of memory in the throughput ladder although the memory search let it "
                   "through (the CPU estimate misses transient buffers), so the memory cap may be too high: set a "
                   "lower --memory-limit")
    return points, warning


def _time_rung(target, model, opt, batch_source, rewind, dev, bs: int, untimed: bool) -> Optional[tuple[float, float]]:
    """One timing of a training step at batch ``bs``: (examples/s, seconds per step), or None when
    it ran out of memory. Steps are repeated for at least REPEAT_SECONDS; ``untimed``: one step first."""
    where = f"the throughput step at batch {bs}"
    batch = batch_source.next(bs)
    oom = False
    try:
        if untimed:
            _train_step(target, model, opt, batch, where, check=False, oom=True)
            _sync(dev)
        reps, t0 = 0, time.perf_counter()
        while True:
            _train_step(target, model, opt, batch, where, check=False, oom=True)
            reps += 1
            _sync(dev)
            el = time.perf_counter() - t0
            if el >= REPEAT_SECONDS or reps >= 200:
                break
    except memory_mod.OutOfMemory:
        oom = True
    finally:
        batch = None
        for p in model.parameters():
            p.grad = None
        rewind()
    if oom:
        opt.state.clear()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return None
    return bs * reps / el, el / reps


def _without_state(result: ProbeResult) -> ProbeResult:
    import dataclasses

    return dataclasses.replace(result, measured_state=None)


def _slowest(per_rank: list) -> list:
    """Throughput points measured on every rank, each at the lowest rank's examples/s."""
    common = set.intersection(*({p.batch_size for p in pts} for pts in per_rank))
    out = []
    for bs in sorted(common):
        mine = [next(p for p in pts if p.batch_size == bs) for pts in per_rank]
        out.append(min(mine, key=lambda p: p.examples_per_s))
    return out
