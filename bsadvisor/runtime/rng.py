"""Every random stream a run touches (Python, NumPy, torch, CUDA): capture, restore, seed.

The probe and the training loop both promise to leave the user's streams as they were,
and a resumed run must continue the same streams; both go through these functions.

A captured state holds only tensors, lists, numbers and strings, so a checkpoint that
contains it loads with ``torch.load(..., weights_only=True)``: no pickled Python object
(NumPy's state is an ndarray; it is kept as an int64 tensor) and no code on loading.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def get_state() -> dict:
    """The state of every stream, in plain types (tensors, lists, numbers, strings)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"python": [int(version), [int(x) for x in internal], gauss],
            "numpy": {"name": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.random.get_rng_state(), "cuda": list(cuda) if cuda is not None else None}


def set_state(state: dict) -> None:
    """Restore the streams from :func:`get_state`'s result."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npst = state["numpy"]
    if isinstance(npst, dict):
        key = np.asarray(npst["key"].numpy() if isinstance(npst["key"], torch.Tensor) else npst["key"], dtype=np.uint32)
        np.random.set_state((npst["name"], key, int(npst["pos"]), int(npst["has_gauss"]),
                             float(npst["cached_gaussian"])))
    else:
        np.random.set_state(npst)
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
