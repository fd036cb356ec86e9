"""Document-masked core attention on PyTorch's ``flex_attention``, without TransformerEngine.

Upstream (megatron-core 0.15.3): packed sequences reach attention only as
``packed_seq_params`` for TransformerEngine's THD kernels; the local
``DotProductAttention`` asserts ``packed_seq_params is None``, and the dataset's
``reset_attention_mask`` builds a dense ``[s, s]`` mask per sample (16 MB of floats at
seq 2048, built on the data workers) that only the unfused softmax honours. Here the
mask is the *document id* of every token, and :class:`FlexCoreAttention` turns it
into a flex ``BlockMask``: each query sees the earlier tokens of its own document
(block-diagonal causal), and blocks of 128 x 128 that no query may see are skipped.

How the ids get there: NeMo's forward step hands the model's ``attention_mask``
argument to every layer unchanged; :mod:`trainer.megatron.document_masking` puts an
``int32 [b, s]`` tensor of document ids there, widened by the block tables (below;
:func:`is_document_ids` tells either from megatron's boolean masks). The ids follow
from the position ids, which restart at 0 at each document (``GPTDataset``'s
``reset_position_ids``): no dense mask is ever made.

Position ids and the rotary embedding: megatron-core applies RoPE by absolute
position ``0..s-1`` and ignores ``position_ids``. Inside one document the
attention score depends only on the distance between query and key, which is the
same whether positions restart at the document or not, so masked attention over a
packed sample equals each document run on its own
(``tests/test_trainer_flex_attention.py`` checks exactly that).

The block mask is built from the ids by a few tensor operations on ``(s/128)^2``
blocks (:func:`document_block_mask`), not by evaluating the mask on all ``s^2``
pairs; still, those are some twenty small kernels (argsorts, comparisons, and
``from_kv_blocks`` transposing the key-side tables into the query-side ones the
backward needs): ~3 ms per layer on an H200 against ~0.9 ms for the flex kernel.
So :func:`~trainer.megatron.document_masking.document_forward_step` builds them
once per micro batch (:func:`document_mask_tables`) and hands every layer ONE
``int32 [b, s + extra]`` tensor: the ids, then per row the eight block tables, flattened in :data:`TABLES`
order. Each layer slices the tables back out and constructs the ``BlockMask``
directly (:func:`block_mask_from_tables`): copies only, nothing recomputed. A cache
on the Python side (keyed on the ids tensor) would not do: megatron-core's local
CUDA graphs capture each layer with the mask as one of the graph's input tensors,
copied in at every replay, so a replay never runs Python and a captured lookup
would keep serving the tables of the capture's batch. Stateless, the tables travel
in the mask itself and every replay reads this micro batch's. A mask exactly ``s``
wide is plain ids (any other caller): its block mask is built in the layer, as before.

On CUDA ``flex_attention`` runs through ``torch.compile`` (a fused Triton kernel).
On the CPU (tests; torch 2.13) it runs eagerly, PyTorch's reference path, which
evaluates the mask on every pair and ignores the block structure; flex has no
backward on the CPU at all, so when gradients are needed there the same mask goes
to ``scaled_dot_product_attention`` as a dense ``[s, s]`` mask instead. The tests
compare the block structure with ``create_block_mask``'s and run the compiled
kernel's forward on the CPU; ``bench/packing_gpu.py`` checks forward and backward
against dense SDPA on the GPU. Attention dropout is not supported (Qwen2 uses none).

Kernel options: torch's heuristics pick the Triton kernels' block sizes; for the trainer's
shape on Hopper (head dim 64, bf16) ``bench/flex_options.py`` measured better ones
(:data:`TUNED_KERNEL_OPTIONS`: one layer's forward + backward 0.580 against 0.669 ms on
one H200), used unless ``model.flex_kernel_options=torch``.

Guard: ``tests/test_trainer_flex_attention.py`` fails if the signatures of
``flex_attention``, ``BlockMask.from_kv_blocks``, the ``BlockMask`` constructor or
``DotProductAttention.forward`` change, or if a tuned option stops being one of torch's
``FlexKernelOptions``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from trainer.megatron.layers import SDPACoreAttention

BLOCK = 128  # flex_attention's default sparse block size (queries and keys)
# flex_attention / BlockMask.from_kv_blocks parameters this module passes (torch 2.11 and 2.13).
FLEX_PARAMS = ("query", "key", "value", "block_mask", "scale", "enable_gqa", "kernel_options")
FROM_KV_BLOCKS_PARAMS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "BLOCK_SIZE",
                         "mask_mod", "seq_lengths")
# The BlockMask tables after the ids in document_mask_tables' tensor, in this order; each is
# [b, 1, n] (the counts) or [b, 1, n, n] (the block indices), n = ceil(s / block). These names
# are also BlockMask's attributes and constructor parameters (torch 2.13).
TABLES = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
          "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
BLOCK_MASK_PARAMS = ("seq_lengths", *TABLES, "BLOCK_SIZE", "mask_mod")
_compiled_flex = None

# Options of flex's Triton kernels (``flex_attention(kernel_options=...)``; names as torch's
# ``FlexKernelOptions``, ``fwd_``/``bwd_`` for one pass only), measured for the trainer's attention
# by ``bench/flex_options.py`` and keyed by (compute capability, head dim, dtype name). Where no entry
# matches (another card or shape), or with ``model.flex_kernel_options=torch``, torch's own
# heuristics choose. Filled from measurements only: docs/benchmarks.md has each entry's run.
TUNED_KERNEL_OPTIONS: dict[tuple[tuple[int, int], int, str], dict] = {
    # Hopper (sm90: H100, H200), head dim 64 (Qwen2.5-0.5B), bf16: one layer's forward + backward,
    # micro batch 4, seq 2048, replayed as a CUDA graph on one H200: 0.580 ms against 0.669 with
    # torch 2.11's choice (forward 128 x 128, backward 64 x 128 / 128 x 64 with 8 warps), the same
    # errors against a float32 reference. Nearly all of it is the backward kernels'.
    ((9, 0), 64, "bfloat16"): {
        "fwd_BLOCK_M": 64, "fwd_BLOCK_N": 64, "fwd_num_stages": 3, "fwd_num_warps": 4,
        "bwd_BLOCK_M1": 64, "bwd_BLOCK_N1": 64, "bwd_BLOCK_M2": 64, "bwd_BLOCK_N2": 64,
        "bwd_num_stages": 3, "bwd_num_warps": 4,
    },
}
KERNEL_OPTION_CHOICES = ("tuned", "torch")
CONFIG_ATTR = "jp_flex_kernel_options"  # set on the TransformerConfig by trainer.run.recipe.nemo_model_config


def tuned_options(capability: tuple[int, int], head_dim: int, dtype: torch.dtype) -> dict | None:
    """:data:`TUNED_KERNEL_OPTIONS`' entry for this card and shape (a copy), or None (torch chooses)."""
    options = TUNED_KERNEL_OPTIONS.get((tuple(capability), head_dim, str(dtype).removeprefix("torch.")))
    return dict(options) if options else None


def kernel_options(q: torch.Tensor, choice: str = "tuned") -> dict | None:
    """The ``kernel_options`` for ``q`` (``[b, heads, s, head_dim]``) under ``model.flex_kernel_options``."""
    if choice not in KERNEL_OPTION_CHOICES:
        raise ValueError(f"model.flex_kernel_options: {choice!r} is not one of {', '.join(KERNEL_OPTION_CHOICES)}")
    if choice == "torch" or not q.is_cuda:
        return None
    return tuned_options(torch.cuda.get_device_capability(q.device), q.shape[-1], q.dtype)


def is_document_ids(mask) -> bool:
    """True for the ``int32`` document ids of :mod:`trainer.megatron.document_masking`: ``[b, s]``
    plain, or ``[b, s + tables_width(s)]`` with their block tables (:func:`document_mask_tables`)."""
    return isinstance(mask, torch.Tensor) and mask.dtype == torch.int32 and mask.dim() == 2


def document_mask_mod(doc: torch.Tensor):
    """Flex ``mask_mod``: query ``q`` may see key ``kv`` of the same document, not later."""

    def mask_mod(b, h, q, kv):
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    return mask_mod


def _kv_lists(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[b, n, n]`` booleans -> per query block the count and the (ascending) key blocks."""
    counts = blocks.sum(-1, dtype=torch.int32)[:, None]
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)[:, None]
    return counts, order


def document_block_mask(doc: torch.Tensor, block: int = BLOCK) -> BlockMask:
    """The block-diagonal causal ``BlockMask`` of ``doc`` (``[b, s]``, non-decreasing ids).

    For query block ``i`` and key block ``j <= i`` (first and last id of each block,
    since ids never decrease): the pair is *touched* when the key block's last document
    reaches the query block's first, and *full* (no per-token mask needed) when both
    blocks lie inside one document and ``j < i``. Blocks holding padding past ``s``
    are never full.

    >>> m = document_block_mask(torch.tensor([[0] * 200 + [1] * 184]))
    >>> m.to_dense()[0, 0].tolist(), m.full_kv_num_blocks[0, 0].tolist()
    ([[1, 0, 0], [1, 1, 0], [0, 1, 1]], [0, 0, 0])
    """
    b, s = doc.shape
    n = -(-s // block)
    pad = n * block - s
    padded = torch.cat([doc, doc[:, -1:].expand(b, pad)], dim=1) if pad else doc
    blocks = padded.reshape(b, n, block)
    lo, hi = blocks[..., 0], blocks[..., -1]
    i = torch.arange(n, device=doc.device)
    below = (i[None, :] <= i[:, None])[None]  # j <= i
    touched = below & (hi[:, None, :] >= lo[:, :, None])
    single = lo == hi
    full = (i[None, :] < i[:, None])[None] & single[:, :, None] & single[:, None, :] & (lo[:, :, None] == lo[:, None, :])
    if pad:
        full[:, -1, :] = False
        full[:, :, -1] = False
    kv_num, kv_idx = _kv_lists(touched & ~full)
    full_num, full_idx = _kv_lists(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=document_mask_mod(doc), seq_lengths=(s, s))


def _table_shapes(s: int, block: int) -> list[tuple[int, ...]]:
    n = -(-s // block)
    return [(n,), (n, n)] * 4  # TABLES: a count per query/key block, then n block indices for each


def tables_width(s: int, block: int = BLOCK) -> int:
    """Columns the block tables add after ``s`` document ids (1088 at seq 2048)."""
    return sum(math.prod(shape) for shape in _table_shapes(s, block))


def document_mask_tables(doc: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """``int32 [b, s + tables_width(s)]``: the ids, then :func:`document_block_mask`'s tables.

    Built once per micro batch; every layer rebuilds the mask with :func:`block_mask_from_tables`.

    >>> wide = document_mask_tables(torch.tensor([[0] * 200 + [1] * 184]))
    >>> wide.shape, block_mask_from_tables(wide, 384).to_dense()[0, 0].tolist()
    (torch.Size([1, 432]), [[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    """
    mask = document_block_mask(doc, block)
    b = doc.shape[0]
    return torch.cat([doc.to(torch.int32)] + [getattr(mask, name).reshape(b, -1) for name in TABLES], dim=1)


def _fresh(t: torch.Tensor) -> torch.Tensor:
    # A copy, always: flex's Triton kernel indexes the tables as contiguous [b, h, ...], and a view
    # of the wide tensor is not; fresh copies also keep strides and alignment the same every call.
    return t.clone(memory_format=torch.contiguous_format)


def block_mask_from_tables(wide: torch.Tensor, s: int, block: int = BLOCK) -> BlockMask:
    """The ``BlockMask`` of :func:`document_mask_tables`' tensor: slices and copies, nothing recomputed."""
    b = wide.shape[0]
    doc = _fresh(wide[:, :s])
    tables, start = {}, s
    for name, shape in zip(TABLES, _table_shapes(s, block)):
        size = math.prod(shape)
        tables[name] = _fresh(wide[:, start:start + size].reshape(b, 1, *shape))
        start += size
    return BlockMask(seq_lengths=(s, s), **tables, BLOCK_SIZE=(block, block), mask_mod=document_mask_mod(doc))


def _has_tables(mask: torch.Tensor, s: int) -> bool:
    """Whether ``mask`` carries block tables after its ``s`` ids; a clear error for any other width."""
    if mask.shape[1] == s:
        return False
    if mask.shape[1] == s + tables_width(s):
        return True
    raise ValueError(f"document masking: the attention mask is {mask.shape[1]} wide for sequence length {s}; "
                     f"expected {s} (document ids) or {s + tables_width(s)} (ids and block tables, "
                     "trainer.megatron.flex_attention.document_mask_tables)")


def _block_mask(mask: torch.Tensor, s: int) -> BlockMask:
    return block_mask_from_tables(mask, s) if _has_tables(mask, s) else document_block_mask(mask)


def dense_document_mask(doc: torch.Tensor) -> torch.Tensor:
    """``[b, 1, s, s]`` booleans, True where attention is allowed (CPU fallback and tests only)."""
    s = doc.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def document_attention(q, k, v, mask: torch.Tensor, scale: float | None, groups: int,
                       options: str | dict = "tuned") -> torch.Tensor:
    """Block-diagonal causal attention of ``[b, heads, s, hn]`` tensors (see the module doc).

    ``mask``: document ids ``[b, s]``, or :func:`document_mask_tables`' ids and block tables.
    ``options``: ``tuned`` / ``torch`` (:func:`kernel_options`), or a ``kernel_options`` dict itself.
    """
    global _compiled_flex
    s = q.shape[2]
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        chosen = options if isinstance(options, dict) else kernel_options(q, options)
        return _compiled_flex(q, k, v, block_mask=_block_mask(mask, s), scale=scale, enable_gqa=groups > 1,
                              kernel_options=chosen)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):  # flex: no CPU backward
        _has_tables(mask, s)  # the width check alone: the dense mask needs only the ids
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense_document_mask(mask[:, :s]),
                                                                scale=scale)
    with warnings.catch_warnings():  # the eager reference path warns that it is unfused
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=_block_mask(mask, s), scale=scale, enable_gqa=groups > 1)


class FlexCoreAttention(SDPACoreAttention):
    """:class:`SDPACoreAttention` whose ``attention_mask`` may be document ids.

    With document ids (``int32 [b, s]``): ``flex_attention`` with
    :func:`document_block_mask`; with ids and block tables (``int32 [b, s + tables_width(s)]``,
    from :func:`document_mask_tables`): with the mask rebuilt from the tables; otherwise (no
    mask, or one of megatron's boolean masks, e.g. at generation) exactly :class:`SDPACoreAttention`. The rotary
    embedding handed over by ``RopeInCoreSelfAttention`` is applied the same way.
    """

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if not is_document_ids(attention_mask):
            return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias,
                                   packed_seq_params)
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("FlexCoreAttention: packed_seq_params and attention bias are not supported")
        if self.training and self.config.attention_dropout:
            raise NotImplementedError(
                f"FlexCoreAttention: attention dropout {self.config.attention_dropout} is not supported by "
                "flex_attention; set attention_dropout=0 (Qwen2's value) or turn data.document_masking off")
        query, key = self.take_pending_rope(query, key)
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        out = document_attention(q, k, v, attention_mask, self.softmax_scale, groups,
                                 getattr(self.config, CONFIG_ATTR, "tuned"))
        sq, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)


def flex_layer_spec(config):
    """The ``sdpa`` layer spec, with the plug-ins the run asks for (compiled layers, MLP
    recompute: :func:`trainer.megatron.fast_spec.fast_layer_spec`), and :class:`FlexCoreAttention`
    as its core attention (``model.sdpa_backend`` then only matters where no document ids come)."""
    from trainer.megatron.fast_spec import fast_layer_spec

    spec = fast_layer_spec(config)
    spec.submodules.self_attention.submodules.core_attention = FlexCoreAttention
    return spec
