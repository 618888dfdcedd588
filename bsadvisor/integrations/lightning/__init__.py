"""PyTorch Lightning follows a plan: ``FollowPlan`` (callback.py), and LightningModules as TARGETs
(``target_from_lightning``, target.py). Importing it imports Lightning.
"""
from __future__ import annotations

try:
    import lightning.pytorch  # noqa: F401
except ImportError as exc:  # the optional extra is missing
    raise ImportError("bsadvisor.integrations.lightning needs PyTorch Lightning: "
                      "pip install 'bsadvisor[lightning]'") from exc

from bsadvisor.integrations.lightning.callback import FollowPlan
from bsadvisor.integrations.lightning.target import target_from_lightning

__all__ = ["FollowPlan", "target_from_lightning"]
