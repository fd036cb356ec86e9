"""The layer spec with the optional speed plug-ins: SDPA kernel, compiled layers, MLP recompute.

:func:`configure` writes the run's choices (``model.sdpa_backend``, ``model.compile_layers``,
``model.mlp_recompute``) onto the megatron config as ``jp_*`` attributes and, when any
differs from today's path, points ``config.transformer_layer_spec`` at
:func:`fast_layer_spec`. That function starts from :func:`~trainer.megatron.layers.sdpa_layer_spec`
and swaps in :class:`~trainer.megatron.sdpa_backend.BackendSDPACoreAttention`,
:class:`~trainer.megatron.compiled_layer.CompiledTransformerLayer` and
:class:`~trainer.megatron.mlp_recompute.RecomputeFc1MLP`.

The attributes are set after the config is built, so NeMo's checkpoint context (the
config's constructor arguments) still names ``sdpa_layer_spec``: checkpoints of these runs
load and export exactly like today's, and a config without the attributes (an exported
or restored one) builds today's layers.

Upstream (megatron-core 0.15.3): edits the ``ModuleSpec`` of ``models.gpt.gpt_layer_specs.get_gpt_layer_local_spec``
through :func:`~trainer.megatron.layers.sdpa_layer_spec`; NeMo 2.7.3's ``GPTConfig.configure_model`` calls
``config.transformer_layer_spec(config)``.
Guard: ``tests/test_trainer_fast_spec.py``.
"""

from __future__ import annotations

from trainer.megatron.layers import SDPACoreAttention, TrainGraphsTransformerLayer, sdpa_layer_spec

DEFAULTS = {"jp_sdpa_backend": "default", "jp_compile_layers": False, "jp_mlp_recompute": False}


def configure(config, *, sdpa_backend: str = "default", compile_layers: bool = False,
              mlp_recompute: bool = False) -> bool:
    """Record the choices on ``config``; use :func:`fast_layer_spec` if any is not today's.

    Returns whether the spec was swapped (only a config on ``sdpa_layer_spec`` is touched:
    another spec, e.g. megatron's local attention, keeps its own layers).
    """
    from trainer.megatron.sdpa_backend import CHOICES

    if sdpa_backend not in CHOICES:
        raise ValueError(f"model.sdpa_backend: {sdpa_backend!r} is not one of {', '.join(CHOICES)}")
    choices = {"jp_sdpa_backend": sdpa_backend, "jp_compile_layers": bool(compile_layers),
               "jp_mlp_recompute": bool(mlp_recompute)}
    for name, value in choices.items():
        setattr(config, name, value)
    if choices == DEFAULTS or config.transformer_layer_spec is not sdpa_layer_spec:
        return False
    config.transformer_layer_spec = fast_layer_spec
    return True


def fast_layer_spec(config):
    """:func:`sdpa_layer_spec` with the plug-ins ``config``'s ``jp_*`` attributes ask for."""
    spec = sdpa_layer_spec(config)
    attention = spec.submodules.self_attention.submodules
    if getattr(config, "jp_sdpa_backend", "default") != "default" and attention.core_attention is SDPACoreAttention:
        from trainer.megatron.sdpa_backend import BackendSDPACoreAttention

        attention.core_attention = BackendSDPACoreAttention
    if getattr(config, "jp_compile_layers", False) and spec.module is TrainGraphsTransformerLayer:
        from trainer.megatron.compiled_layer import CompiledTransformerLayer

        spec.module = CompiledTransformerLayer
    if getattr(config, "jp_mlp_recompute", False):
        from trainer.megatron.mlp_recompute import RecomputeFc1MLP

        spec.submodules.mlp.module = RecomputeFc1MLP
    return spec
