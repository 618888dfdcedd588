"""The probe (torch): gradient noise scale, memory cap and throughput measured on a user's model.

``probe.py`` reads top to bottom like the probe itself: configure, warm up (``warmup.py``),
freeze θ, measure the noise (``noise.py``), the memory cap (``memory.py``) and the
throughput ladder (``throughput.py``), assemble the result. ``bench.py`` holds what the
phases share (options, budget, batches), ``step.py`` the guarded calls into the user's
code, ``state.py`` the snapshot that leaves the user's model as it was found. The pure
statistics and search live in :mod:`bsadvisor.core.noise` and :mod:`bsadvisor.core.memory`.
``advise.py``: ``bsadvisor.advise``, the probe followed by the recommendation (core.recommend).
"""
