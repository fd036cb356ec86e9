"""Document-masked attention (trainer.megatron.flex_attention, document_masking) on a real
megatron-core GPTModel on the CPU: equal to megatron's dense per-document mask, and to each
document run on its own; the block mask equal to flex's own create_block_mask, and the one rebuilt
from the per-micro-batch tables equal to the one built from the ids."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from torch.nn.attention.flex_attention import BlockMask, create_block_mask, create_mask, flex_attention  # noqa: E402

from trainer.megatron import flex_attention as fa  # noqa: E402
from trainer.megatron.document_masking import document_forward_step, document_ids  # noqa: E402

EOD = 127


def test_upstream_signatures_still_have_what_we_pass():
    """If this fails, torch or megatron-core changed an API these modules call: re-check them."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    assert set(fa.FLEX_PARAMS) <= set(inspect.signature(flex_attention).parameters)
    assert set(fa.FROM_KV_BLOCKS_PARAMS) <= set(inspect.signature(BlockMask.from_kv_blocks).parameters)
    # block_mask_from_tables constructs BlockMask itself, by keyword, with every table it has
    init = inspect.signature(BlockMask.__init__).parameters
    assert set(fa.BLOCK_MASK_PARAMS) <= set(init)
    required = {n for n, p in init.items() if p.default is p.empty and p.kind is not p.VAR_KEYWORD} - {"self"}
    assert required <= set(fa.BLOCK_MASK_PARAMS), required
    assert set(fa.TABLES) <= set(BlockMask.__annotations__)
    core = list(inspect.signature(DotProductAttention.forward).parameters)
    assert core[:5] == ["self", "query", "key", "value", "attention_mask"]
    assert {"attn_mask_type", "attention_bias", "packed_seq_params"} <= set(core)
    assert list(inspect.signature(fa.FlexCoreAttention.forward).parameters) == core
    assert {"input_ids", "position_ids", "attention_mask", "labels"} <= set(inspect.signature(GPTModel.forward).parameters)


def test_tuned_kernel_options_are_torch_options():
    """If this fails, torch renamed a flex kernel option the tuned table sets: re-measure
    (bench/flex_options.py) and update TUNED_KERNEL_OPTIONS."""
    from torch.nn.attention.flex_attention import FlexKernelOptions

    known = set(FlexKernelOptions.__annotations__)
    assert fa.TUNED_KERNEL_OPTIONS, "the table holds at least the measured Hopper entry"
    for (capability, head_dim, dtype), options in fa.TUNED_KERNEL_OPTIONS.items():
        assert getattr(torch, dtype).is_floating_point and head_dim > 0 and len(capability) == 2
        for name in options:
            assert name.removeprefix("fwd_").removeprefix("bwd_") in known, name
        # the kernels' static assertions and the mask's 128-token blocks
        if "bwd_BLOCK_M1" in options:
            assert options["bwd_BLOCK_N1"] % options["bwd_BLOCK_M1"] == 0
            assert options["bwd_BLOCK_M2"] % options["bwd_BLOCK_N2"] == 0
        for name in ("fwd_BLOCK_M", "fwd_BLOCK_N", "bwd_BLOCK_M1", "bwd_BLOCK_N1", "bwd_BLOCK_M2", "bwd_BLOCK_N2"):
            if name in options:
                assert fa.BLOCK % options[name] == 0, name


def test_kernel_options_choice():
    from trainer.run.config import FLEX_KERNEL_OPTIONS

    assert FLEX_KERNEL_OPTIONS == fa.KERNEL_OPTION_CHOICES  # the config's validation (no torch import there)
    hopper = fa.tuned_options((9, 0), 64, torch.bfloat16)
    assert hopper == fa.TUNED_KERNEL_OPTIONS[((9, 0), 64, "bfloat16")]
    hopper["fwd_BLOCK_M"] = 1  # a copy: the caller cannot change the table
    assert fa.TUNED_KERNEL_OPTIONS[((9, 0), 64, "bfloat16")]["fwd_BLOCK_M"] != 1
    assert fa.tuned_options((9, 0), 128, torch.bfloat16) is None  # another shape: torch chooses
    assert fa.tuned_options((8, 0), 64, torch.bfloat16) is None  # another card
    q = torch.zeros(1, 2, 8, 64)
    assert fa.kernel_options(q, "tuned") is None and fa.kernel_options(q, "torch") is None  # the CPU: none
    with pytest.raises(ValueError, match="model.flex_kernel_options: 'fast'"):
        fa.kernel_options(q, "fast")


def _dense_blocks(num, idx, n):
    sel = torch.arange(n)[None, None, None, :] < num[..., None]
    out = torch.zeros(num.shape[0], 1, n, n, dtype=torch.bool)
    out.scatter_(-1, idx.long(), sel)
    return out[:, 0]


@settings(max_examples=60, deadline=None)
@given(s=st.integers(1, 90), block=st.integers(1, 9), starts=st.lists(st.integers(1, 89), max_size=12))
def test_block_mask_equals_create_block_mask(s, block, starts):
    """Same blocks visited as flex's own mask-evaluating builder; full blocks never wrongly full."""
    flags = torch.zeros(2, s, dtype=torch.bool)
    flags[:, 0] = True
    flags[0, [x for x in starts if x < s]] = True
    flags[1, [x for x in starts[::2] if x < s]] = True
    doc = torch.cumsum(flags, 1, dtype=torch.int32) - 1
    mine = fa.document_block_mask(doc, block)
    ref = create_block_mask(fa.document_mask_mod(doc), 2, None, s, s, device="cpu", BLOCK_SIZE=block)
    n = -(-s // block)
    mp, rp = (_dense_blocks(m.kv_num_blocks, m.kv_indices, n) for m in (mine, ref))
    mf, rf = (_dense_blocks(m.full_kv_num_blocks, m.full_kv_indices, n) for m in (mine, ref))
    assert torch.equal(mp | mf, rp | rf)
    assert not (mf & ~rf).any()
    assert not ((rf & ~mf) & ~torch.eye(n, dtype=torch.bool)).any()  # only diagonal blocks kept partial
    _same_block_mask(fa.block_mask_from_tables(fa.document_mask_tables(doc, block), s, block), mine)


def _ids(*lengths_per_row):
    """``int32 [b, s]`` document ids of rows of the given document lengths (same total per row)."""
    return torch.stack([torch.repeat_interleave(torch.arange(len(ls), dtype=torch.int32), torch.tensor(ls))
                        for ls in lengths_per_row])


LAYOUTS = {
    "one document": _ids([256]),
    "short row": _ids([50]),
    "on block edges": _ids([128, 256, 128]),
    "off block edges, s % 128 != 0": _ids([7, 200, 93]),
    "many documents": _ids([3, 1, 40, 129, 2, 300, 11, 12, 1, 51]),
    "two rows, two layouts": _ids([128, 172], [1, 299]),
    "seq 2048": _ids([600, 128, 1000, 20, 300], [2048]),
}


def _same_block_mask(mine: BlockMask, ref: BlockMask):
    for name in fa.TABLES:
        assert torch.equal(getattr(mine, name), getattr(ref, name)), name
        assert getattr(mine, name).is_contiguous(), name
    assert (mine.seq_lengths, mine.BLOCK_SIZE) == (ref.seq_lengths, ref.BLOCK_SIZE)
    assert torch.equal(mine.to_dense(), ref.to_dense())
    b, s = ref.shape[0], ref.seq_lengths[0]
    assert torch.equal(create_mask(mine.mask_mod, b, 1, s, s, device="cpu"),
                       create_mask(ref.mask_mod, b, 1, s, s, device="cpu"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_block_mask_from_tables_equals_document_block_mask(layout):
    doc = LAYOUTS[layout]
    b, s = doc.shape
    wide = fa.document_mask_tables(doc)
    assert wide.dtype == torch.int32 and wide.shape == (b, s + fa.tables_width(s)) and fa.is_document_ids(wide)
    assert torch.equal(wide[:, :s], doc)
    _same_block_mask(fa.block_mask_from_tables(wide, s), fa.document_block_mask(doc))


@pytest.mark.parametrize("layout", ["off block edges, s % 128 != 0", "two rows, two layouts"])
def test_attention_with_tables_equals_with_ids(layout):
    """document_attention on the wide tensor == on plain ids: eager flex (no gradients) and the
    dense fallback (gradients), outputs and gradients."""
    doc = LAYOUTS[layout]
    b, s = doc.shape
    wide = fa.document_mask_tables(doc)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, h, s, 8, generator=g) for h in (4, 2, 2))
    with torch.no_grad():
        torch.testing.assert_close(fa.document_attention(q, k, v, wide, None, 2),
                                   fa.document_attention(q, k, v, doc, None, 2), rtol=0, atol=0)
    grad = torch.randn(b, 4, s, 8, generator=g)
    results = []
    for mask in (wide, doc):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fa.document_attention(*leaves, mask, None, 2)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in leaves])
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, rtol=0, atol=0)


def test_wrong_mask_width_is_a_clear_error():
    doc = LAYOUTS["off block edges, s % 128 != 0"]
    s = doc.shape[1]
    q = torch.randn(1, 2, s, 8)
    wide = fa.document_mask_tables(doc)
    for bad in (wide[:, :-1], torch.cat([doc, doc[:, :3]], 1)):
        with pytest.raises(ValueError, match=f"attention mask is {bad.shape[1]} wide for sequence length {s}"):
            fa.document_attention(q, q, q, bad, None, 1)
        with torch.no_grad(), pytest.raises(ValueError, match="document_mask_tables"):
            fa.document_attention(q, q, q, bad, None, 1)


def test_document_ids_from_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert document_ids(pos).tolist() == [[0, 0, 0, 1, 1, 2, 3, 3], [0] * 8]
    assert document_ids(pos).dtype == torch.int32 and fa.is_document_ids(document_ids(pos))
    assert not fa.is_document_ids(torch.zeros(2, 1, 8, 8, dtype=torch.bool))


def _gpt(config, spec, seed=0):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron.cpu_shims import megatron_on_cpu

    torch.manual_seed(seed)
    with megatron_on_cpu():
        return GPTModel(config=config, transformer_layer_spec=spec, vocab_size=128, max_sequence_length=64,
                        position_embedding_type="rope", rotary_base=10000)


def _packed_batch():
    """Two rows of documents ending in EOD, as GPTDataset gives them with reset_position_ids."""
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    g = torch.Generator().manual_seed(5)
    rows, masks, positions = [], [], []
    for lengths in ([7, 3, 12, 2], [24]):
        row = torch.cat([torch.cat([torch.randint(0, EOD, (n - 1,), generator=g), torch.tensor([EOD])])
                         for n in lengths])
        mask, _, pos = _get_ltor_masks_and_position_ids(row, EOD, True, True, True, True)
        rows.append(row), masks.append(mask), positions.append(pos)
    return torch.stack(rows), torch.stack(masks), torch.stack(positions)


def _loss(model, ids, pos, mask):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    with megatron_on_cpu():
        return model(ids, pos, mask, labels=torch.roll(ids, -1, 1))


def _loss_and_grads(model, ids, pos, mask):
    model.zero_grad(set_to_none=True)
    loss = _loss(model, ids, pos, mask)
    loss.sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}



def test_flex_equals_megatron_dense_document_mask(model_parallel, tiny_transformer_config, monkeypatch):
    """FlexCoreAttention on document ids == megatron's local DotProductAttention with the dense
    reset_attention_mask, outputs and every gradient, on the same weights."""
    import contextlib
    import types

    from megatron.core.transformer import dot_product_attention

    from trainer.megatron.layers import local_layer_spec

    # the local attention forks the CUDA RNG tracker around its (zero) dropout; on the CPU none exists
    monkeypatch.setattr(dot_product_attention.tensor_parallel, "get_cuda_rng_tracker",
                        lambda: types.SimpleNamespace(fork=contextlib.nullcontext))

    config = tiny_transformer_config()
    ids, dense, pos = _packed_batch()
    reference = _gpt(config, local_layer_spec(config))
    model = _gpt(config, fa.flex_layer_spec(config))
    model.load_state_dict(reference.state_dict())
    assert isinstance(model.decoder.layers[0].self_attention.core_attention, fa.FlexCoreAttention)
    ref_loss, ref_grads = _loss_and_grads(reference, ids, pos, dense)
    wide = fa.document_mask_tables(document_ids(pos))  # what document_forward_step hands the model
    loss, grads = _loss_and_grads(model, ids, pos, document_ids(pos))  # with gradients: the dense CPU path
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    wide_loss, wide_grads = _loss_and_grads(model, ids, pos, wide)
    torch.testing.assert_close(wide_loss, loss, rtol=0, atol=0)
    for name, grad in wide_grads.items():
        torch.testing.assert_close(grad, grads[name], rtol=0, atol=0, msg=name)
    calls = []
    monkeypatch.setattr(fa, "flex_attention", lambda *a, **k: calls.append(k["block_mask"]) or flex_attention(*a, **k))
    with torch.no_grad():  # forward only: flex_attention itself, with the block mask
        flex_loss = _loss(model, ids, pos, document_ids(pos))
        wide_flex_loss = _loss(model, ids, pos, wide)
    assert len(calls) == 4 and isinstance(calls[0], BlockMask)
    _same_block_mask(calls[2], calls[0])  # rebuilt from the tables in the layer == built there from the ids
    torch.testing.assert_close(flex_loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wide_flex_loss, flex_loss, rtol=0, atol=0)
    # and it is not the plain causal result: the documents really are kept apart
    causal_loss, _ = _loss_and_grads(model, ids, pos, None)
    assert not torch.allclose(causal_loss, ref_loss, atol=1e-4)
    assert model.decoder.layers[0].self_attention.core_attention.pending_rope is None


def test_packed_row_equals_each_document_alone(model_parallel, tiny_transformer_config):
    """Position ids restarting per document are honoured exactly: the rotary embedding is relative,
    so a packed row's logits are each document's logits computed on its own."""
    from trainer.megatron.cpu_shims import megatron_on_cpu

    config = tiny_transformer_config()
    model = _gpt(config, fa.flex_layer_spec(config)).eval()
    ids, _, pos = _packed_batch()
    doc = document_ids(pos)
    with torch.no_grad(), megatron_on_cpu():
        packed = model(ids, pos, doc)
        for d in range(int(doc[0].max()) + 1):
            span = (doc[0] == d).nonzero().flatten()
            alone = model(ids[:1, span], torch.arange(len(span))[None], None)
            torch.testing.assert_close(packed[0, span], alone[0], rtol=1e-5, atol=1e-5)


def test_without_document_ids_it_is_sdpa(model_parallel, tiny_transformer_config):
    from trainer.megatron.cpu_shims import megatron_on_cpu
    from trainer.megatron.layers import sdpa_layer_spec

    config = tiny_transformer_config()
    ids, _, pos = _packed_batch()
    sdpa, flex = _gpt(config, sdpa_layer_spec(config)), _gpt(config, fa.flex_layer_spec(config))
    flex.load_state_dict(sdpa.state_dict())
    with torch.no_grad(), megatron_on_cpu():
        torch.testing.assert_close(flex(ids, pos, None), sdpa(ids, pos, None))


def test_attention_dropout_is_refused(model_parallel, tiny_transformer_config):
    config = tiny_transformer_config(attention_dropout=0.1)
    model = _gpt(config, fa.flex_layer_spec(config))
    ids, _, pos = _packed_batch()
    from trainer.megatron.cpu_shims import megatron_on_cpu

    with pytest.raises(NotImplementedError, match="attention dropout"), megatron_on_cpu():
        model(ids, pos, document_ids(pos))


def test_forward_step_derives_document_ids():
    seen = {}

    def model(**kwargs):
        seen.update(kwargs)
        return torch.zeros(())

    pos = torch.tensor([[0, 1, 0, 1, 2]])
    batch = {"tokens": torch.zeros(1, 5, dtype=torch.long), "labels": torch.zeros(1, 5, dtype=torch.long),
             "position_ids": pos, "loss_mask": torch.ones(1, 5)}
    document_forward_step(model, batch)
    wide = seen["attention_mask"]  # the ids, then the block tables: built once for all layers
    assert wide[:, :5].tolist() == [[0, 0, 1, 1, 1]] and seen["position_ids"] is pos
    assert torch.equal(wide, fa.document_mask_tables(document_ids(pos))) and wide.shape == (1, 5 + fa.tables_width(5))
    pos = torch.cat([torch.arange(130), torch.arange(170), torch.arange(300)]).reshape(2, 300)
    document_forward_step(model, dict(batch, position_ids=pos))
    assert torch.equal(seen["attention_mask"][:, :300], document_ids(pos))
    _same_block_mask(fa.block_mask_from_tables(seen["attention_mask"], 300), fa.document_block_mask(document_ids(pos)))
    dense = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    document_forward_step(model, dict(batch, attention_mask=dense))
    assert seen["attention_mask"] is dense  # megatron's local attention: its dense mask passes through
    with pytest.raises(ValueError, match="TransformerEngine"):
        document_forward_step(model, dict(batch, cu_seqlens=torch.tensor([0, 5])))


def test_upstream_forward_step_passes_what_ours_passes():
    """If this fails, NeMo's gpt_forward_step changed: re-check document_forward_step against it."""
    from nemo.collections.llm.gpt.model import base

    source = inspect.getsource(base.gpt_forward_step)
    for key in ('"input_ids": batch["tokens"]', '"position_ids": batch["position_ids"]',
                '"labels": batch["labels"]', 'forward_args["attention_mask"] = batch["attention_mask"]'):
        assert key in source, key


@pytest.mark.slow
def test_compiled_flex_kernel_uses_the_block_mask():
    """The eager CPU path ignores the block structure; the compiled kernel (forward only on the CPU)
    reads it: its output equals SDPA with the dense per-document mask, with the mask built from
    the ids or rebuilt from document_mask_tables' tensor."""
    g = torch.Generator().manual_seed(0)
    b, h, s, d = 2, 4, 300, 16
    flags = torch.rand(b, s, generator=g) < 0.02
    flags[:, 0] = True
    doc = torch.cumsum(flags, 1, dtype=torch.int32) - 1
    q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
    compiled = torch.compile(flex_attention, dynamic=False)
    out = compiled(q, k, v, block_mask=fa.document_block_mask(doc))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=fa.dense_document_mask(doc))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # a new batch's mask (a new mask_mod closure) must not recompile: the layers build one per call
    from torch._dynamo import config as dynamo_config

    other = torch.cumsum(torch.rand(b, s, generator=g) < 0.05, 1, dtype=torch.int32)
    with dynamo_config.patch(error_on_recompile=True):
        out = compiled(q, k, v, block_mask=fa.document_block_mask(other))
        # nor a mask rebuilt from the tables (as the layers do): fresh tensors, the same strides
        rebuilt = [compiled(q, k, v, block_mask=fa.block_mask_from_tables(fa.document_mask_tables(ids), s))
                   for ids in (doc, other)]
    dense_other = fa.dense_document_mask(other)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=dense_other), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rebuilt[0], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rebuilt[1], out, rtol=0, atol=0)


def test_flex_spec_keeps_the_other_plug_ins(tiny_transformer_config):
    """Compiled layers and the MLP recompute (trainer.megatron.fast_spec) still apply with document masking."""
    from trainer.megatron.compiled_layer import CompiledTransformerLayer
    from trainer.megatron.mlp_recompute import RecomputeFc1MLP

    config = tiny_transformer_config()
    config.jp_compile_layers, config.jp_mlp_recompute, config.jp_sdpa_backend = True, True, "cudnn"
    spec = fa.flex_layer_spec(config)
    assert spec.module is CompiledTransformerLayer and spec.submodules.mlp.module is RecomputeFc1MLP
    assert spec.submodules.self_attention.submodules.core_attention is fa.FlexCoreAttention
    plain = fa.flex_layer_spec(tiny_transformer_config())
    assert plain.submodules.self_attention.submodules.core_attention is fa.FlexCoreAttention
