"""Scoped stand-ins for the CUDA calls megatron-core makes unconditionally.

Used around the import parity check and the checkpoint save of the importer,
which run on the CPU even on a GPU machine: megatron's rotary embedding moves
``inv_freq`` to ``torch.cuda.current_device()`` (so it would land on the GPU
while the model is on the CPU), and its checkpoint writer calls
``torch.cuda.synchronize()`` (which fails without CUDA).

Upstream (torch, megatron-core 0.15.3): swaps ``torch.cuda.current_device`` and
``torch.cuda.synchronize`` inside a ``with`` block only.
Guard: ``tests/test_trainer_nemo.py::test_import_parity_passes_with_fix_and_fails_with_upstream_mapping``
(the import runs on the CPU through these).
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def megatron_on_cpu():
    saved = torch.cuda.current_device, torch.cuda.synchronize
    torch.cuda.current_device = lambda: "cpu"
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.synchronize = saved
