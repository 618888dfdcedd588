"""Adam's companion scaling of a plan (Malladi et al. 2205.10287, --adam-sde; docs/concepts.md eq. 27). No torch here."""
from __future__ import annotations

from dataclasses import replace

from bsadvisor.core.plan import Stage


def adam_sde(stages: list[Stage], b0: int, notes: list[str]) -> list[Stage]:
    """Malladi et al.'s companion scaling (eq. 27): at a batch κ·B0, β1 → β1^κ, 1−β2 × κ and ε ÷ √κ.

    The SDE that makes η ∝ √B keep Adam's dynamics also scales Adam's averaging horizons
    and its ε with the batch factor κ (relative to the original's batch at the same
    sample). β1 is the stage's momentum, raised to κ: its horizon 1/(1−β1^κ) is the original's
    measured in examples (κ× fewer updates of κ× the examples), ≈ κ·(1−β1) for β1 near 1 but
    never negative (1 − κ·(1−β1) is 0.04 at β1 0.9 and κ 9.6; 0.9^9.6 is 0.36). β2 and ε are
    factors the scheduler applies to the optimizer's own values (1−β2 × κ, capped at 1, for
    β2 near 1 the same as β2^κ; ε ÷ √κ).
    """
    out, shown = [], []
    for st in stages:
        kappa = st.batch_size / b0
        if kappa == 1:
            out.append(st)
            continue
        beta1 = st.momentum ** kappa  # the horizon in examples kept (eq. 27)
        out.append(replace(st, momentum=beta1, extra={**st.extra, "beta2_factor": kappa, "eps_factor": kappa ** -0.5}))
        shown.append(f"batch {st.batch_size}: β1 {beta1:.3g}, 1−β2 × {kappa:.3g}, ε × {kappa ** -0.5:.3g}")
    if shown:
        notes.append("Adam companion scaling (Malladi et al. 2205.10287, --adam-sde): " + "; ".join(dict.fromkeys(shown)))
    return out
