"""A gradient-norm kernel for megatron-core without apex or TransformerEngine that
does not stop the host once per tensor.

Without apex/TE, megatron-core's ``clip_grads`` falls back to
``megatron.core.utils.local_multi_tensor_l2_norm``, which builds
``torch.tensor([norm_0, norm_1, ...])`` from CUDA scalars: one device-to-host copy,
and so one ``cudaStreamSynchronize``, per gradient tensor (96 for LoRA rank 16 on
q,k,v,o of Qwen2.5-0.5B, ~290 full-parameter). On one H100 the profile of a LoRA step
showed ~125 synchronisations per step, stalling the host once it ran ahead of the GPU.

:func:`l2_norm` computes the same norm with ``torch._foreach_norm`` and a stack on the
device and returns it there, like upstream's ``l2_cuda``; the one ``.item()`` that
``get_grad_norm_fp32`` does afterwards is then the only synchronisation. :func:`install`
swaps it in for megatron's fallback (the module global that megatron itself picks among
apex, TE and local implementations at import); with apex or TE present it changes nothing.
``tests/test_trainer_grad_norm.py`` fails if upstream stops using that global.

Upstream (megatron-core 0.15.3): replaces ``optimizer.clip_grads.l2_norm_impl`` (the fallback
``megatron.core.utils.local_multi_tensor_l2_norm``).
Guard: ``tests/test_trainer_grad_norm.py``.
"""

from __future__ import annotations

import torch


def l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """Drop-in for ``local_multi_tensor_l2_norm``: ``(norm as a float32 tensor of shape [1], None)``.

    >>> grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    >>> l2_norm(2048, None, [grads], False)
    (tensor([5.]), None)
    """
    tensors = [t for tensor_list in tensor_lists for t in tensor_list]
    if not tensors:
        return torch.zeros(1, dtype=torch.float), None
    norms = torch._foreach_norm([t.float() if t.dtype not in (torch.float32, torch.float64) else t for t in tensors])
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    return total.reshape(1), None


def install() -> bool:
    """Use :func:`l2_norm` in megatron-core's ``clip_grads`` if it runs on the local fallback."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm

    if getattr(clip_grads, "l2_norm_impl", None) is local_multi_tensor_l2_norm:
        clip_grads.l2_norm_impl = l2_norm
        return True
    return clip_grads.l2_norm_impl is l2_norm
