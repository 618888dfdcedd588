"""The machine a command runs on: its cores, its load, and how OpenMP threads should wait (no torch).

On a CPU shared with other processes, torch's OpenMP threads spin-wait for each other by default:
with 2 threads on 2 cores and three busy processes a small training loop ran 20 times slower
(0.62 s quiet, 12.3 s loaded), and 6 times faster again with ``OMP_WAIT_POLICY=PASSIVE``, to the
same numbers. The CLI therefore sets a passive wait policy before torch loads (unless the user
chose one) and warns when the CPU is oversubscribed; it never changes the thread count.
"""
from __future__ import annotations

import os
from typing import MutableMapping, Optional


def cpu_count() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the system has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def passive_wait(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy; True when it was set here.

    It takes effect only if torch (and its OpenMP runtime) is not loaded yet: call it first.
    Waiting passively changes no result, only how idle threads wait.
    """
    if environ.get("OMP_WAIT_POLICY"):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def busy_cpu_warning(threads: int, cores: int, load: Optional[float], policy: Optional[str]) -> Optional[str]:
    """One line when the CPU is oversubscribed (1-minute load average above the cores), else None.

    ``threads``: torch's intra-op threads; ``policy``: OMP_WAIT_POLICY as the process has it.
    """
    if load is None or cores < 1 or load <= cores:
        return None
    wait = ("OpenMP threads wait passively" if (policy or "").upper() == "PASSIVE" else
            f"OMP_WAIT_POLICY={policy or 'unset'}: its threads spin-wait, set OMP_WAIT_POLICY=PASSIVE")
    fewer = ("; fewer threads may run faster (OMP_NUM_THREADS=1; the thread count is yours to choose)"
             if threads > 1 else "")
    return (f"the CPU is oversubscribed (load average {load:.1f} on {cores} cores, torch uses {threads} "
            f"thread{'s' if threads != 1 else ''}): training and timings will be slower ({wait}){fewer}")
