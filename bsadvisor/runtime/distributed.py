"""Where a process trains: a process group from torchrun's environment, or ``--device`` for one process.

``bsadvisor`` has no launcher of its own. Under ``torchrun --nproc_per_node=K -m bsadvisor
probe ...`` every process reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and :func:`init_from_env` joins the
group: NCCL with one CUDA device per process (``cuda:LOCAL_RANK``), gloo on CPU. Without
``WORLD_SIZE`` (a plain ``bsadvisor probe``) it returns a single-process :class:`Dist`
whose collectives are no-ops, so callers need no special case; :func:`resolve_device` turns
its ``--device`` into a torch.device.

The collective timeout is ``BSADVISOR_DIST_TIMEOUT`` seconds (default 600): a rank that
dies or a rendezvous that never completes fails the job instead of hanging it.
See docs/distributed.md.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn, Optional

import torch
import torch.distributed as tdist

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError

DEFAULT_TIMEOUT_S = 600.0


@dataclass
class Dist:
    """Where this process stands in the job. ``Dist()`` is the single-process no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: Optional[str] = None
    device: Optional[str] = None   # device this rank measures on ("cuda:1", "cpu"); None: caller decides
    owns_group: bool = False       # init_from_env created the group, so destroy() tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ collectives
    def _comm_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduced copy of ``tensor`` (sum, min or max over ranks), on ``tensor``'s device."""
        if not self.enabled:
            return tensor.clone()

        ops = {"sum": tdist.ReduceOp.SUM, "min": tdist.ReduceOp.MIN, "max": tdist.ReduceOp.MAX}
        t = tensor.detach().to(self._comm_device(), copy=True).contiguous()
        tdist.all_reduce(t, op=ops[op])
        return t.to(tensor.device)

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]

        out: list = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.enabled:
            return obj

        box = [obj if self.rank == src else None]
        tdist.broadcast_object_list(box, src=src)
        return box[0]

    def broadcast_module(self, model: torch.nn.Module, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers into every rank's ``model`` (in place)."""
        if not self.enabled:
            return

        dev = self._comm_device()
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                buf = t.detach().to(dev, copy=True).contiguous()
                tdist.broadcast(buf, src=src)
                t.copy_(buf.to(t.device))

    def average_grads(self, params) -> None:
        """Replace each parameter's ``.grad`` by its mean over ranks (what DDP does), one all-reduce."""
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if not grads:
            return
        flat = torch.cat([g.detach().reshape(-1).to(torch.float64) for g in grads])
        flat = self.all_reduce(flat) / self.world_size
        pos = 0
        with torch.no_grad():
            for p, g in zip(params, grads):
                n = g.numel()
                p.grad = flat[pos:pos + n].view_as(g).to(g.dtype)
                pos += n

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def destroy(self) -> None:
        """Tear the group down if :func:`init_from_env` created it (safe to call twice).

        On the success path call :meth:`barrier` first: with gloo, a rank that destroys
        the group while another still talks to it can abort the other. (Not on an error
        path: the other ranks may be stuck in another collective; torchrun stops them.)
        """
        if self.owns_group:
            if tdist.is_initialized():
                tdist.destroy_process_group()
            self.owns_group = False


def exit_job(code: int) -> NoReturn:
    """End this process of a torchrun job now: flush stdout/stderr, then ``os._exit(code)``.

    The work is done (callers pass a barrier first on success), so skipping the
    interpreter's teardown loses nothing; it also skips the teardown of the gloo/NCCL
    group, which intermittently aborted (SIGABRT, "terminate called without an active
    exception") a finished rank on CPU and turned a good run into a failed job.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


#: The largest RANK, WORLD_SIZE, LOCAL_RANK or LOCAL_WORLD_SIZE taken (torch keeps them as 32-bit ints).
MAX_ENV_INT = 2**31 - 1
#: The longest collective timeout (BSADVISOR_DIST_TIMEOUT), 30 days.
MAX_TIMEOUT_S = 30 * 24 * 3600


def _env_int(name: str, default: Optional[int] = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise UserError(f"{name} is not set: start the job with torchrun (see docs/distributed.md)")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={checks.show(raw)} is not a whole number") from None
    if abs(value) > MAX_ENV_INT:  # torch's store and process group take 32-bit ranks and sizes
        raise UserError(f"environment variable {name}={checks.show(raw)} is too large (at most {MAX_ENV_INT})")
    return value


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("BSADVISOR_DIST_TIMEOUT")
    try:
        secs = float(raw) if raw is not None else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UserError(f"BSADVISOR_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    if not 0 < secs <= MAX_TIMEOUT_S:  # inf or 1e308 would overflow timedelta
        raise UserError(f"BSADVISOR_DIST_TIMEOUT must be a number of seconds above 0 and at most "
                        f"{MAX_TIMEOUT_S} (30 days), got {checks.show(raw)}")
    return datetime.timedelta(seconds=secs)


def current() -> Dist:
    """A Dist for a process group someone else initialised, or the single-process Dist."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return Dist()
    backend = str(tdist.get_backend())
    local_rank = _env_int("LOCAL_RANK", 0)
    device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
    return Dist(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank,
                local_world_size=_env_int("LOCAL_WORLD_SIZE", 1), backend=backend, device=device)


def init_from_env(device: str = "auto") -> Dist:
    """Join the job torchrun started (NCCL on CUDA, gloo on CPU); single-process Dist without WORLD_SIZE.

    ``device`` is the user's ``--device`` (cpu, cuda or auto). Under NCCL each process
    takes ``cuda:LOCAL_RANK``; ``cuda:N`` with an explicit index is refused under torchrun.
    """
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    world = _env_int("WORLD_SIZE")
    if world < 1:
        raise UserError(f"WORLD_SIZE must be at least 1, got {world}")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1)
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside 0..{world - 1}")
    if world == 1:
        return Dist()

    if not tdist.is_available():
        raise UserError("this torch build has no torch.distributed; reinstall torch or run one process")
    req = checks.device("--device", "auto" if device is None else device).lower()
    if req.startswith("cuda:"):
        raise UserError(f"--device {device} under torchrun: use --device cuda (each process takes cuda:LOCAL_RANK)")
    use_cuda = req == "cuda" or (req == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but CUDA is not available; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible; "
                            "lower --nproc_per_node")
        torch.cuda.set_device(local_rank)
        backend, dev = "nccl", f"cuda:{local_rank}"
    else:
        backend, dev = "gloo", "cpu"
    if tdist.is_initialized():
        return current()
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UserError(f"{name} is not set: start the job with torchrun (see docs/distributed.md)")
    try:
        tdist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                 timeout=_timeout())
    except (RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"joining the process group ({backend}) failed: {msg}") from None
    return Dist(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                backend=backend, device=dev, owns_group=True)


def resolve_device(device: str) -> torch.device:
    """``--device`` (auto, cpu, cuda, cuda:N) as a torch.device; auto picks CUDA when there is one."""
    device = checks.device("--device", "auto" if device is None else device).lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but CUDA is not available; use --device cpu or auto")
        try:
            return torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a device; use cuda or cuda:N") from None
    return torch.device("cpu")
