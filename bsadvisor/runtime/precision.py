"""How each update runs, as the user trains: mixed precision and gradient clipping (``StepRecipe``).

A Target says ``precision`` ("32", "bf16-mixed", "16-mixed": Lightning's names) and
``max_grad_norm``. Every path that trains or measures (train_step and so validate, the
probe's steps and draws, the noise monitor's draws) runs the user's ``loss_fn`` under
:meth:`StepRecipe.autocast` and ends an update with :meth:`StepRecipe.step`, in torch's
documented order (torch.amp examples, "Gradient clipping"): backward on the scaled loss,
``scaler.unscale_``, ``clip_grad_norm_`` of the global norm, ``scaler.step``,
``scaler.update``.

- "bf16-mixed": ``torch.autocast(device, bfloat16)``, no scaler (bf16 has fp32's range).
- "16-mixed": ``torch.autocast(device, float16)`` with a ``torch.amp.GradScaler``. A step
  whose gradients hold inf/NaN is skipped by the scaler, which then halves its scale:
  ``skipped`` says so (the scale went down; it never goes down otherwise).

The noise estimators read gradients before clipping and divide out the loss scale
(:attr:`StepRecipe.loss_scale`), so B_simple is the one of the user's true gradient.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from bsadvisor.core.errors import UserError, first_line

_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """A UserError, in one line, when ``device`` cannot run ``precision``."""
    if precision == "32":
        return
    dtype = _DTYPES[precision]
    kind = device.type
    if not torch.amp.is_autocast_available(kind):
        raise UserError(f"precision {precision!r}: torch has no autocast on {kind}; use precision '32'")
    if kind == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise UserError(f"precision 'bf16-mixed': {torch.cuda.get_device_name(device)} has no bfloat16; use "
                        "'16-mixed' or '32'")
    try:  # the device's autocast must run a matmul in that dtype (an old CPU build may lack it)
        with torch.autocast(kind, dtype=dtype):
            a = torch.ones(2, 2, device=device)
            out = a @ a
        if out.dtype != dtype:
            raise RuntimeError(f"autocast gave {out.dtype}")
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"precision {precision!r} cannot run on {device} ({type(exc).__name__}: "
                        f"{first_line(exc)[:120]}); use precision '32'") from None


class StepRecipe:
    """The precision and clipping of every update (module docstring); ``skipped``: the last step was skipped.

    ``grad_norm``: the last update's global gradient norm before clipping (None without clipping).
    """

    def __init__(self, precision: str = "32", max_grad_norm: Optional[float] = None,
                 device: Optional[torch.device] = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.precision = precision
        self.max_grad_norm = max_grad_norm
        check_precision(precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        self.skipped = False
        self.grad_norm: Optional[float] = None
        self.last_scale = 1.0  # the loss scale the last update's gradients carried

    @classmethod
    def of(cls, target, device: Optional[torch.device] = None) -> "StepRecipe":
        """The target's recipe on ``device`` (default: where its model is)."""
        if device is None:
            device = next((p.device for p in target.model.parameters()), torch.device("cpu"))
        return cls(getattr(target, "precision", "32"), getattr(target, "max_grad_norm", None), device)

    def autocast(self):
        """The context the user's loss_fn runs in: ``torch.autocast`` of the precision (a no-op for "32")."""
        if self.precision == "32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    @property
    def loss_scale(self) -> float:
        """The factor the scaler multiplies the loss by now (1 without one); gradients carry it until unscaled."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, of the scaled loss under a scaler."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params) -> bool:
        """Unscale, clip the global norm, step, update the scale; returns whether the step was taken."""
        self.last_scale = self.loss_scale
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        self.grad_norm = None
        if self.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.max_grad_norm)
            self.grad_norm = float(norm)
        if self.scaler is None:
            optimizer.step()
            self.skipped = False
            return True
        self.scaler.step(optimizer)
        self.scaler.update()
        self.skipped = self.scaler.get_scale() < self.last_scale  # the scale only goes down on an inf/NaN gradient
        return not self.skipped

    def describe(self) -> dict:
        return {"precision": self.precision, "max_grad_norm": self.max_grad_norm}

    def state_dict(self) -> Optional[dict]:
        """The scaler's state (its scale and growth tracker), None without a scaler."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: Optional[dict]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def unscaled_grads(loss: torch.Tensor, params, scale: float) -> list:
    """``torch.autograd.grad`` of ``loss`` × ``scale``, divided by ``scale`` (the fp16 backward's range)."""
    got = torch.autograd.grad(loss * scale if scale != 1.0 else loss, params, allow_unused=True)
    return [g if g is None or scale == 1.0 else g / scale for g in got]


__all__ = ["StepRecipe", "check_precision", "unscaled_grads"]
