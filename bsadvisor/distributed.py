"""``bsadvisor.distributed``: joining a torchrun job from Python, apart from the training names.

Only code that starts or joins a process group itself needs these; ``import bsadvisor``
stays torch-free because the package loads this module on first use of
``bsadvisor.distributed``, and importing it imports torch. docs/distributed.md shows the use:

    dist = bsadvisor.distributed.init_from_env("auto")   # or .current() for a group you started
    result = bsadvisor.probe(target, dist=dist)
"""
from __future__ import annotations

from bsadvisor.runtime.distributed import Dist, current, init_from_env

__all__ = ["Dist", "current", "init_from_env"]
