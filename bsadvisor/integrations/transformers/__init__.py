"""Hugging Face transformers follows a plan: ``HFFollowPlan`` (callback.py), a ``TrainerCallback``.
Importing it imports transformers.
"""
from __future__ import annotations

try:
    import transformers  # noqa: F401
except ImportError as exc:  # the optional extra is missing
    raise ImportError("bsadvisor.integrations.transformers needs Hugging Face transformers: "
                      "pip install 'bsadvisor[transformers]'") from exc

from bsadvisor.integrations.transformers.callback import HFFollowPlan, check_transformers_version

__all__ = ["HFFollowPlan", "check_transformers_version"]
