"""Plug-ins that make NeMo 2.7.3 / megatron-core 0.15.3 fast and correct without TransformerEngine.

Each module replaces or patches one upstream piece, says at its top which upstream
version and symbol, and names the test that fails when upstream changes under it:
``layers`` (layer spec, SDPA core attention, lean linears), ``fused_loss``, ``fast_lora``,
``grad_norm``, ``dist_optim``, ``cuda_graphs``, ``nemo_patches``, ``cpu_shims``, ``model`` (the NeMo model
class), ``unwrap``, and document masking: ``flex_attention`` (core attention), ``document_masking``
(the forward step), ``gpt_datasets`` (end-of-document-safe and packed ``GPTDataset``).

May import: upstream packages only; nothing else from ``trainer``.
"""
