"""Losses that fail in one phase of the probe only: the user's code raising after warmup (the probe's tests
call them in-process; tests/test_probe_cli.py's target file imports them)."""
from __future__ import annotations

import torch

CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 1234567890 bytes. Error code 12 (Cannot allocate memory)")


class BackwardBoom(torch.autograd.Function):
    """The identity forward whose backward raises."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward exploded")


def fails_over(limit, make_error):
    """A loss_fn wrapper that calls ``make_error(inner, m, b)`` for batches larger than ``limit`` (with a limit
    above the warmup batch, only after warmup and noise)."""
    def wrap(inner):
        def loss(m, b):
            if len(b[1]) > limit:
                return make_error(inner, m, b)
            return inner(m, b)
        return loss
    return wrap


def raising(exc):
    """``make_error`` that raises ``exc``."""
    def f(inner, m, b):
        raise exc
    return f


def backward_raises(inner, m, b):
    """``make_error`` whose loss raises in backward."""
    return BackwardBoom.apply(inner(m, b))
