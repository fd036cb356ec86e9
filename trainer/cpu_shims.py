"""Scoped stand-ins for the CUDA calls megatron-core makes unconditionally.

Used only where no CUDA device exists (CI, the import parity check on a CPU
machine), and only around the call that needs them: megatron's rotary embedding
moves ``inv_freq`` to ``torch.cuda.current_device()`` and its checkpoint writer
calls ``torch.cuda.synchronize()``. On a GPU machine this is a no-op.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def cuda_shims_on_cpu():
    if torch.cuda.is_available():
        yield
        return
    saved = torch.cuda.current_device, torch.cuda.synchronize
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.synchronize = saved
