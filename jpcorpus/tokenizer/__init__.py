"""The project's tokenizer layer: the exact Qwen2.5 tokenizer offline, or any HF fast tokenizer.

``load_tokenizer(spec)`` accepts

* ``qwen2.5`` -- the built-in, rebuilt offline from pinned BPE ranks into a real
  Hugging Face directory in the cache (see :mod:`jpcorpus.tokenizer.builtin_qwen`);
* a local Hugging Face tokenizer directory (``tokenizer.json`` and/or
  ``tokenizer_config.json``), loaded with ``AutoTokenizer.from_pretrained``;
* anything else, as a hub id (only works when the hub is reachable).

>>> tok = load_tokenizer("qwen2.5")                      # doctest: +SKIP
>>> tok.encode("Hello world").tolist(), tok.eod_id       # doctest: +SKIP
([9707, 1879], 151643)

``encode_batch`` returns int32 arrays with no special tokens and no end-of-document
id (the caller appends ``eod_id``). For the built-in it uses an exact tiktoken fast
path (:mod:`jpcorpus.tokenizer.fastpath`) unless ``JPCORPUS_NO_FAST_TOKENIZER=1``.

Fingerprint (``Tokenizer.fingerprint``, ``tokfp1:<sha256>``): the sha256 of a
canonical JSON of the vocabulary in id order (added tokens included), the added
tokens (id, content, special) and the ids of a fixed probe set; see
:mod:`jpcorpus.tokenizer.fingerprint`. Two tokenizers that tokenise alike share
it, whatever their files' formatting.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jpcorpus.sidecar import file_sha256

BUILTIN_NAMES = ("qwen2.5",)
DEFAULT_EOD_TOKEN = "<|endoftext|>"
# Files whose sha256 goes into describe()["files"], when present.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "tokenizer.model")


class TokenizerError(ValueError):
    """A tokenizer could not be loaded or configured as asked."""


def cache_root() -> Path:
    """``$JPCORPUS_CACHE`` or ``~/.cache/jpcorpus``."""
    return Path(os.environ.get("JPCORPUS_CACHE") or Path.home() / ".cache" / "jpcorpus").expanduser()


def _fast_path_wanted(fast_path: bool | None) -> bool:
    if fast_path is not None:
        return fast_path
    return os.environ.get("JPCORPUS_NO_FAST_TOKENIZER", "").strip().lower() in ("", "0", "false", "no")


class Tokenizer:
    """A loaded tokenizer: encode/decode plus the facts a shard sidecar records."""

    def __init__(self, name: str, *, hf_dir: Path | None = None, hf=None, eod_token: str | None = None,
                 fingerprint: str | None = None, fast=None, backend_file: Path | None = None):
        if hf_dir is None and hf is None:
            raise TokenizerError("a Tokenizer needs a directory or a loaded HF tokenizer")
        self.name = name
        self.hf_dir = hf_dir
        self._hf = hf
        self._fingerprint = fingerprint
        self._fast = fast
        self.fast_path = fast is not None
        self._eod_token = eod_token
        # For the built-in, whose tokenizer.json we wrote ourselves, encode and
        # decode straight through the `tokenizers` library: importing
        # transformers costs seconds in every worker process.
        self._backend_file = backend_file
        self._raw_backend = None
        self._builtin = False  # set by _load_builtin: the files are ours, the added tokens' ids known

    @property
    def hf(self):
        """The Hugging Face fast tokenizer (loaded on first use)."""
        if self._hf is None:
            from transformers import AutoTokenizer

            from jpcorpus.tokenizer.regex_alarm import regex_alarm_checked

            with regex_alarm_checked(self.hf_dir):  # transformers 4.57's false Mistral-regex warning
                self._hf = _require_fast(AutoTokenizer.from_pretrained(str(self.hf_dir)), str(self.hf_dir))
        return self._hf

    @property
    def _backend(self):
        if self._hf is None and self._backend_file is not None:
            if self._raw_backend is None:
                from tokenizers import Tokenizer as RawTokenizer

                self._raw_backend = RawTokenizer.from_file(str(self._backend_file))
            return self._raw_backend
        return self.hf.backend_tokenizer

    @property
    def vocab_size(self) -> int:
        """Base vocabulary plus added tokens, as ``len(tokenizer)`` (151,665 for Qwen2.5).

        Computed once: ``tokenizers`` builds the whole vocabulary to count it
        (0.05-0.14 s for Qwen's on the 2-core VM), and binarize asks twice.
        """
        if getattr(self, "_vocab_size", None) is None:
            self._vocab_size = self._backend.get_vocab_size(with_added_tokens=True)
        return self._vocab_size

    @property
    def eod_token(self) -> str:
        """End-of-document token: the override, else ``<|endoftext|>``, else the eos token."""
        if self._eod_token is not None:
            return self._eod_token
        if self._builtin:  # one of its added tokens: no need to parse tokenizer.json to know
            return DEFAULT_EOD_TOKEN
        if self._backend.token_to_id(DEFAULT_EOD_TOKEN) is not None:
            return DEFAULT_EOD_TOKEN
        if self._backend_file is None and self.hf.eos_token is not None:
            return str(self.hf.eos_token)
        raise TokenizerError(f"{self.name} has neither {DEFAULT_EOD_TOKEN} nor an eos token; pass --eod-token")

    @property
    def eod_id(self) -> int:
        """Id of :attr:`eod_token` (looked up once).

        The built-in knows the ids of its added tokens without its ``tokenizer.json``:
        parsing that (0.4 s) only for this id was most of a Ray worker's tokenizer load,
        the fast path encoding every text of the corpora without it.
        """
        if getattr(self, "_eod_id", None) is None:
            idx = _builtin_added_id(self.eod_token) if self._builtin else None
            if idx is None:
                idx = self._backend.token_to_id(self.eod_token)
            if idx is None:
                raise TokenizerError(f"--eod-token {self.eod_token!r} is not in the vocabulary of {self.name}")
            self._eod_id = int(idx)
        return self._eod_id

    @property
    def fingerprint(self) -> str:
        """``tokfp1:`` + sha256 of vocabulary, added tokens and probe ids (cached)."""
        if self._fingerprint is None:
            from jpcorpus.tokenizer.fingerprint import fingerprint

            self._fingerprint = fingerprint(self._backend)
        return self._fingerprint

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """int32 ids per text; no special tokens added, no end-of-document appended."""
        out: list[np.ndarray | None] = [None] * len(texts)
        slow = list(range(len(texts)))
        if self._fast is not None:
            slow = []
            for i, text in enumerate(texts):
                out[i] = self._fast.encode(text)
                if out[i] is None:
                    slow.append(i)
        if slow:
            backend = self._backend
            batch = [texts[i] for i in slow]
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            for i, enc in zip(slow, encode(batch, add_special_tokens=False)):
                out[i] = np.asarray(enc.ids, dtype=np.int32)
        return out  # type: ignore[return-value]

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of one text (see :meth:`encode_batch`)."""
        return self.encode_batch([text])[0]

    def decode(self, ids) -> str:
        """Text of ``ids`` (special tokens kept)."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def describe(self) -> dict:
        """What a shard sidecar records about this tokenizer."""
        files = {}
        if self.hf_dir is not None:
            files = {f: file_sha256(self.hf_dir / f) for f in TOKENIZER_FILES if (self.hf_dir / f).is_file()}
        return {"name": self.name, "fingerprint": self.fingerprint, "vocab_size": self.vocab_size,
                "eod_id": self.eod_id, "eod_token": self.eod_token, "files": files}

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, fast_path={self.fast_path})"


def _require_fast(hf, where: str):
    if not getattr(hf, "is_fast", False) or getattr(hf, "backend_tokenizer", None) is None:
        raise TokenizerError(f"{where} loads only as a slow (Python) tokenizer; jpcorpus needs a fast one: "
                             "add a tokenizer.json to the directory (e.g. save_pretrained from a fast tokenizer)")
    return hf


def _builtin_fast_encoder(folder: Path):
    from jpcorpus.tokenizer import builtin_qwen
    from jpcorpus.tokenizer.fastpath import FastEncoder, cached_unsafe_codepoints

    unsafe = cached_unsafe_codepoints(folder, builtin_qwen.QWEN2_PATTERN)
    return FastEncoder(builtin_qwen.load_ranks(), builtin_qwen.QWEN2_PATTERN, unsafe,
                       [content for content, _ in builtin_qwen.ADDED_TOKENS])


def _load_builtin(name: str, eod_token: str | None, fast_path: bool | None) -> Tokenizer:
    from jpcorpus.tokenizer import builtin_qwen

    folder = builtin_qwen.materialize(cache_root())
    fast = _builtin_fast_encoder(folder) if _fast_path_wanted(fast_path) else None
    tok = Tokenizer(name, hf_dir=folder, eod_token=eod_token, fast=fast,
                    fingerprint=builtin_qwen.cached_fingerprint(folder), backend_file=folder / "tokenizer.json")
    tok._builtin = True
    return tok


def _builtin_added_id(token: str) -> int | None:
    """The built-in's id of ``token`` if it is one of its added tokens (ids 151643..), else None."""
    from jpcorpus.tokenizer import builtin_qwen

    contents = [content for content, _ in builtin_qwen.ADDED_TOKENS]
    return builtin_qwen.RANKS_COUNT + contents.index(token) if token in contents else None


# What must be equal, in a tokenizer.json, for two tokenizers to encode alike.
_ENCODING_KEYS = ("normalizer", "pre_tokenizer", "model")


def _encoding_part(value):
    """``value`` without ``trim_offsets``, which moves offsets, never ids (re-saving flips it)."""
    if isinstance(value, dict):
        return {k: _encoding_part(v) for k, v in value.items() if k != "trim_offsets"}
    if isinstance(value, list):
        return [_encoding_part(v) for v in value]
    return value


def _attach_builtin_fast_path(tok: Tokenizer) -> None:
    """Give a local directory holding the Qwen2.5 tokenizer the built-in's fast path.

    Only when its tokenizer.json encodes exactly as the built-in does: same
    normalizer, pre-tokenizer, BPE model (vocabulary and merges) and added
    tokens (ids, contents, special flags), compared as parsed JSON. Anything
    else keeps the plain HF path.
    """
    import json

    from jpcorpus.tokenizer import builtin_qwen

    if tok.vocab_size != builtin_qwen.VOCAB_SIZE:
        return
    folder = builtin_qwen.materialize(cache_root())
    ours = json.loads(tok._backend.to_str())
    builtin = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))

    def added(spec: dict) -> list:
        return sorted((t["id"], t["content"], t["special"]) for t in spec.get("added_tokens", []))

    same = all(_encoding_part(ours.get(k)) == _encoding_part(builtin.get(k)) for k in _ENCODING_KEYS)
    if same and added(ours) == added(builtin):
        tok._fast = _builtin_fast_encoder(folder)
        tok.fast_path = True


def load_tokenizer(spec: str, *, eod_token: str | None = None, fast_path: bool | None = None) -> Tokenizer:
    """Load ``qwen2.5`` (built in, offline), a local HF tokenizer directory, or a hub id.

    ``eod_token`` overrides the end-of-document token; ``fast_path`` forces the
    built-in's tiktoken fast path on/off (default: on unless
    ``JPCORPUS_NO_FAST_TOKENIZER=1``). A local directory gets the fast path too
    when its tokenizer.json encodes exactly as the built-in (a downloaded
    Qwen2.5 checkpoint); other tokenizers use HF.
    """
    if spec.strip().lower() in BUILTIN_NAMES:
        tok = _load_builtin(spec, eod_token, fast_path)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
                raise TokenizerError(f"--tokenizer {spec}: the directory has no tokenizer.json or "
                                     "tokenizer_config.json")
            tok = Tokenizer(spec, hf_dir=path, eod_token=eod_token)
            tok.hf  # load now so errors surface here
            if _fast_path_wanted(fast_path):
                _attach_builtin_fast_path(tok)
        elif path.exists():
            raise TokenizerError(f"--tokenizer {spec}: pass the directory holding tokenizer.json, not a file")
        else:
            tok = Tokenizer(spec, hf=_load_hub(spec), eod_token=eod_token)
    tok.eod_id  # fail early on a bad --eod-token
    return tok


def _load_hub(spec: str):
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as err:  # offline, unknown repo, bad files: one actionable message
        raise TokenizerError(
            f"--tokenizer {spec!r}: no such local directory, and loading it as a Hugging Face hub id failed "
            f"(hub unreachable or no such repo: {type(err).__name__}). Pass --tokenizer qwen2.5 for the "
            "built-in Qwen2.5 tokenizer, or a local tokenizer directory.") from err
    return _require_fast(hf, spec)
