"""Shared fixtures: the real built-in tokenizer, the bundled sample, the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "ja_sample.jsonl"
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"

# Never reach for the hub in tests: the built-in tokenizer must work offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen():
    from jpcorpus.tokenizer import load_tokenizer

    return load_tokenizer("qwen2.5")


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def aozora_path() -> Path:
    path = SHARED_CORPUS / "aozora_bench_100mb.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present (it lies beside the checkout only on the team's machines)")
    return path
