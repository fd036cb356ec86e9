"""Reach the megatron-core model inside NeMo's wrappers (no NeMo import needed)."""

from __future__ import annotations


def mcore_module(model):
    """The megatron-core ``GPTModel`` inside a NeMo model (through its DDP/Float16 wrappers):
    the first object down the ``.module`` chain that has a ``decoder``."""
    module = model
    while hasattr(module, "module") and not hasattr(module, "decoder"):
        module = module.module
    return module
