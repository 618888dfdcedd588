"""Leave the user's model as it was found, and rewind it between measurements.

The probe promises to be side-effect free: :func:`preserved_state` puts back, bit for
bit, parameters, gradients, buffers (BatchNorm running stats), requires_grad, train/eval
mode and every random stream (Python, NumPy, torch, CUDA), also when the user's code
raises mid-probe. :class:`Rewind` is the cheap in-device snapshot of θ taken after the
warmup: every memory trial and throughput rung starts again from it, and a noise draw
puts back the buffers its forward passes moved.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from bsadvisor.runtime import rng


@contextmanager
def preserved_state(model: torch.nn.Module):
    """Snapshot parameters, grads, buffers, modes, requires_grad and all RNG states; restore on exit.

    The copies are kept on the CPU (the probe moves the model to its device), and every
    tensor goes back to the device it was on.
    """
    params = list(model.parameters())
    buffers = list(model.buffers())
    param_values = [p.detach().to("cpu", copy=True) for p in params]
    param_grads = [None if p.grad is None else p.grad.detach().to("cpu", copy=True) for p in params]
    requires_grad = [p.requires_grad for p in params]
    buffer_values = [b.detach().to("cpu", copy=True) for b in buffers]
    param_devices = [p.device for p in params]
    buffer_devices = [b.device for b in buffers]
    training = [m.training for m in model.modules()]
    random_state = rng.get_state()
    try:
        yield
    finally:
        rng.set_state(random_state)
        with torch.no_grad():
            for p, device, value, grad, wants_grad in zip(params, param_devices, param_values, param_grads,
                                                          requires_grad):
                if p.device != device:
                    p.data = p.data.to(device)
                p.copy_(value)
                p.grad = None if grad is None else grad.to(device)
                p.requires_grad_(wants_grad)
            for b, device, value in zip(buffers, buffer_devices, buffer_values):
                if b.device != device:
                    b.data = b.data.to(device)
                b.copy_(value)
        for module, mode in zip(model.modules(), training):
            module.training = mode


class Rewind:
    """Cheap in-device snapshot of parameters and buffers; calling it puts them back."""

    def __init__(self, model: torch.nn.Module):
        self.tensors = list(model.parameters()) + list(model.buffers())
        self.saved = [t.detach().clone() for t in self.tensors]

    def __call__(self) -> None:
        with torch.no_grad():
            for tensor, value in zip(self.tensors, self.saved):
                tensor.copy_(value)


def state_on_cpu(model: torch.nn.Module) -> dict:
    """A CPU copy of ``model.state_dict()`` (``ProbeResult.measured_state``: the θ measured at)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
