"""Every random stream a run touches (Python, NumPy, torch, CUDA): capture, restore, seed.

The probe and the training loop both promise to leave the user's streams as they were,
and a resumed run must continue the same streams; both go through these three functions.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def get_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state(),
            "cuda": cuda}


def set_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


RANK_SEED_STRIDE = 1_000_003  # rank r seeds its streams with seed + r·stride: different streams per rank


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` in a torchrun job (rank 0 keeps ``seed``, as one process would)."""
    return seed + rank * RANK_SEED_STRIDE
