"""The output layer and the cross-entropy as one chunked operation (no full logits in memory).

megatron-core's ``GPTModel`` computes ``logits = hidden @ W^T`` for the whole micro
batch, then the loss in float32. With Qwen2.5's 151,936-token vocabulary that is
2.5 GB of bf16 logits per 8,192 tokens, 5 GB more as float32, and the softmax kept
for the backward pass; on one H100 the cross-entropy's element-wise kernels took
~21 ms per micro batch of 8,192 tokens (a fifth of the GPU time of a LoRA step).

:func:`linear_cross_entropy` walks the tokens in chunks (``chunk_tokens`` rows): per
chunk it computes the logits, the loss and, in the same pass, the gradient of the
loss with respect to the logits (``softmax - onehot``), which it multiplies back
through ``W`` at once. Only the ``[tokens, hidden]`` gradient is kept, so memory
does not grow with the vocabulary. The per-token upstream gradient (the loss mask
divided by the token count, known only in backward) scales that gradient row by row
in backward, which is exact because the map is linear in each row.

When ``W`` itself is trained (full-parameter runs: it is the tied embedding) its
gradient needs the upstream gradient, so backward recomputes each chunk's logits
instead (one extra ``hidden @ W^T``, still never the full logits). There the upstream
gradient scales the rows inside the same fused kernel that makes ``softmax - onehot``
(one bf16 write, no float32 copy of the chunk's logits), and ``W``'s gradient is
accumulated by the matrix product itself into a float32 buffer (cuBLAS with a float32
output, ``beta = 1``), not as a bf16 product upcast and added: on one H200 the passes this
removes were ~60 ms of a 0.66 s full-parameter step (``docs/benchmarks.md``).

On CUDA the per-chunk element-wise work (upcast, log-sum-exp, softmax - onehot,
downcast) runs as one ``torch.compile``d function: two reads of the bf16 logits
and one write, instead of megatron's float32 passes.

:func:`install` swaps this into a megatron ``GPTModel`` instance (its
``_postprocess``) for training batches with labels on one tensor-parallel rank;
everything else (inference, no labels, multi-token prediction, tensor parallelism,
an output bias) goes through upstream's code unchanged.
``tests/test_trainer_fused_loss.py`` checks it against upstream's loss and gradients
on a real megatron-core model and fails if ``_postprocess`` changes its signature.

Upstream (megatron-core 0.15.3): replaces ``models.gpt.gpt_model.GPTModel._postprocess`` on an instance.
Guard: ``tests/test_trainer_fused_loss.py``.
"""

from __future__ import annotations

import inspect
import types

import torch

DEFAULT_CHUNK_TOKENS = 4096
# Parameters of megatron-core 0.15.3's GPTModel._postprocess this module relies on.
POSTPROCESS_PARAMS = ("hidden_states", "input_ids", "position_ids", "labels", "mtp_in_postprocess",
                      "inference_context", "runtime_gather_output")


def _ce_chunk(logits: torch.Tensor, labels: torch.Tensor, want_grad: bool):
    """Loss per row (float32) and, if ``want_grad``, ``softmax - onehot`` in the logits' dtype."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    loss = lse - x.gather(1, labels.unsqueeze(1)).squeeze(1)
    if not want_grad:
        return loss, None
    return loss, _softmax_minus_onehot(x, lse, labels).to(logits.dtype)


def _softmax_minus_onehot(x: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gradient of the per-row loss with respect to float32 logits ``x`` (``lse``: their log-sum-exp)."""
    cols = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    return torch.exp(x - lse.unsqueeze(1)) - (cols == labels.unsqueeze(1)).to(x.dtype)


def _ce_grad_scaled(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor):
    """``(softmax - onehot) * scale`` per row, computed in float32, in the logits' dtype."""
    x = logits.float()
    grad = _softmax_minus_onehot(x, torch.logsumexp(x, dim=-1), labels)
    return (grad * scale.float().unsqueeze(1)).to(logits.dtype)


_compiled: dict[object, object] = {}


def ce_chunk(logits: torch.Tensor, labels: torch.Tensor, want_grad: bool):
    """:func:`_ce_chunk`, compiled into fused kernels on CUDA (eager elsewhere)."""
    if not logits.is_cuda:
        return _ce_chunk(logits, labels, want_grad)
    if want_grad not in _compiled:
        _compiled[want_grad] = torch.compile(lambda lg, lb: _ce_chunk(lg, lb, want_grad), dynamic=False)
    return _compiled[want_grad](logits, labels)


def ce_grad_scaled(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor):
    """:func:`_ce_grad_scaled`, compiled into fused kernels on CUDA (eager elsewhere)."""
    if not logits.is_cuda:
        return _ce_grad_scaled(logits, labels, scale)
    if "scaled" not in _compiled:
        _compiled["scaled"] = torch.compile(_ce_grad_scaled, dynamic=False)
    return _compiled["scaled"](logits, labels, scale)


# whether torch.addmm(..., out_dtype=float32, out=acc) ran on CUDA (None: not tried yet)
fp32_out_addmm: bool | None = None


def accumulate_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` with ``acc`` float32 and ``a``, ``b`` possibly bf16.

    On CUDA the product is accumulated by cuBLAS into ``acc`` in float32
    (``torch.addmm(..., out_dtype=torch.float32, out=acc)``); where that overload is missing
    (CPU, older torch) the product is formed in the inputs' dtype and added.
    """
    if a.dtype == acc.dtype and b.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    global fp32_out_addmm
    if acc.is_cuda and fp32_out_addmm is not False:
        try:
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            fp32_out_addmm = True
            return
        except (RuntimeError, TypeError, NotImplementedError):
            fp32_out_addmm = False
    acc += (a @ b).to(acc.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, labels, chunk):
        n = x.shape[0]
        loss = torch.empty(n, dtype=torch.float32, device=x.device)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        precompute = need_x and not need_w
        grad_x = torch.empty_like(x) if precompute else None
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            logits = x[start:end] @ weight.t()
            loss[start:end], dlogits = ce_chunk(logits, labels[start:end], precompute)
            if precompute:
                grad_x[start:end] = dlogits @ weight
            del logits, dlogits
        ctx.chunk = chunk
        if precompute:
            ctx.save_for_backward(grad_x)
        else:
            ctx.save_for_backward(x, weight, labels)
        ctx.precompute = precompute
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.precompute:
            (grad_x,) = ctx.saved_tensors
            return (grad_x * grad_loss.unsqueeze(1).to(grad_x.dtype)), None, None, None
        x, weight, labels = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, x.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, x.shape[0])
            logits = x[start:end] @ weight.t()
            dlogits = ce_grad_scaled(logits, labels[start:end], grad_loss[start:end])
            if need_x:
                grad_x[start:end] = dlogits @ weight
            if need_w:
                accumulate_product(grad_w, dlogits.t(), x[start:end])
            del logits, dlogits
        return grad_x, (grad_w.to(weight.dtype) if need_w else None), None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Per-token ``cross_entropy(hidden @ weight.T, labels)`` in float32, in megatron's layout.

    ``hidden`` is ``[s, b, h]``, ``labels`` ``[b, s]``; returns ``[b, s]`` like
    ``GPTModel.compute_language_model_loss``.

    >>> h, w = torch.randn(5, 2, 8), torch.randn(11, 8)
    >>> y = torch.randint(0, 11, (2, 5))
    >>> ref = torch.nn.functional.cross_entropy((h @ w.t()).transpose(0, 1).reshape(-1, 11), y.reshape(-1),
    ...                                         reduction="none").view(2, 5)
    >>> bool(torch.allclose(linear_cross_entropy(h, w, y, chunk_tokens=3), ref, atol=1e-5))
    True
    """
    s, b, h = hidden.shape
    flat_labels = labels.transpose(0, 1).reshape(s * b)
    loss = _LinearCrossEntropy.apply(hidden.reshape(s * b, h), weight, flat_labels, int(chunk_tokens))
    return loss.view(s, b).transpose(0, 1).contiguous()


def _fusable(model, args: dict) -> bool:
    out = getattr(model, "output_layer", None)
    return (args.get("labels") is not None and not args.get("mtp_in_postprocess")
            and args.get("inference_context") is None and model.post_process and not model.mtp_process
            and out is not None and getattr(out, "bias", None) is None
            and getattr(out, "output_size_per_partition", None) == getattr(out, "output_size", 0)
            and not getattr(out, "sequence_parallel", False))


def install(model, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
    """Route ``model``'s training loss (a megatron ``GPTModel``) through :func:`linear_cross_entropy`."""
    upstream = type(model)._postprocess
    signature = inspect.signature(upstream)
    missing = [p for p in POSTPROCESS_PARAMS if p not in signature.parameters]
    if missing:
        raise RuntimeError(f"megatron-core's GPTModel._postprocess lost {missing}: re-check trainer/megatron/fused_loss.py")

    def _postprocess(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        if not _fusable(self, bound.arguments):
            return upstream(self, *args, **kwargs)
        weight = (self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights
                  else self.output_layer.weight)
        return linear_cross_entropy(bound.arguments["hidden_states"], weight, bound.arguments["labels"],
                                    chunk_tokens)

    model._postprocess = types.MethodType(_postprocess, model)
    model.fused_loss_chunk_tokens = chunk_tokens
