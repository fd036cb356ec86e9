"""Deduplication as stages: the chain A~B~C, agreement with the streaming check, partition independence."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from jpcorpus import dedup_run, dedup_stages
from jpcorpus.engines.local import LocalEngine
from jpcorpus.normalize.cli import normalize
from jpcorpus.normalize.dedup import NearDedup

DATA = Path(__file__).parent / "data" / "normalize"
LABELLED = DATA / "labelled.jsonl"
KEEP = [r["text"] for r in map(json.loads, LABELLED.read_text(encoding="utf-8").splitlines()) if r["label"] == "keep"]


def _stage_status(tmp_path, keys, sigs, spec, parts=(3,)):
    """Run one deduplication step over hand-made fingerprints split into partitions of ``parts`` documents."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    start = 0
    for p, n in enumerate(parts):
        dedup_stages.save_fingerprints(tmp_path, p, 0, np.array(keys[start:start + n], dtype=np.uint64),
                                       None if sigs is None else np.array(sigs[start:start + n], dtype=np.uint16))
        start += n
    dedup_run.run(LocalEngine(1), tmp_path, tmp_path / "dedup", list(parts), [spec])
    return np.fromfile(dedup_run.status_path(tmp_path / "dedup"), dtype=np.uint8).tolist()


NEAR = dedup_stages.DedupSpec("near_dedup", "near_duplicate", "near", columns=2, verify=True, min_equal=3)


def test_chain_keeps_a_and_c_and_drops_b(tmp_path):
    """A~B and B~C are verified edges, A and C are not alike: first kept wins keeps A and C.

    (Connected components would put all three in one cluster and keep only A.)
    """
    keys = [[11, 12], [11, 13], [14, 13]]  # A and B share band 0; B and C share band 1
    sigs = [[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 2, 2]]  # A-B agree on 3 of 4, B-C on 3, A-C on 2
    assert _stage_status(tmp_path, keys, sigs, NEAR) == [0, 1, 0]


def test_chain_across_partitions_and_a_candidate_that_fails_verification(tmp_path):
    keys = [[11, 12], [11, 13], [14, 13], [11, 15]]  # D shares band 0 with A and B
    sigs = [[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 2, 2], [9, 9, 9, 1]]  # D agrees with nobody enough
    assert _stage_status(tmp_path, keys, sigs, NEAR, parts=(1, 2, 1)) == [0, 1, 0, 0]


def test_exact_duplicates_keep_the_first_copy(tmp_path):
    spec = dedup_stages.DedupSpec("exact_dedup", "exact_duplicate", "exact", columns=1)
    assert _stage_status(tmp_path, [[5], [6], [5], [5], [7], [6]], None, spec, parts=(2, 4)) == [0, 0, 1, 1, 0, 1]


def test_candidates_per_bucket_are_bounded(tmp_path):
    """With max_candidates=1 the fourth copy is compared with the first member of the bucket only."""
    keys = [[7, 1], [7, 2], [7, 3], [7, 4]]
    sigs = [[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [3, 3, 3, 3]]
    spec = dedup_stages.DedupSpec("near_dedup", "near_duplicate", "near", 2, True, 3, max_candidates=1)
    assert _stage_status(tmp_path, keys, sigs, spec, (4,)) == [0, 0, 0, 0]  # C (like B) was compared with A only
    spec.max_candidates = 2
    assert _stage_status(tmp_path / "2", keys, sigs, spec, (4,)) == [0, 0, 1, 0]


def _chain_texts(seed: int = 5):
    """B: 400 random kana; A: B with its last 45 characters replaced; C: B with its first 45 replaced."""
    rng = random.Random(seed)
    kana = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわ"
    fresh = lambda n: "".join(rng.choice(kana) for _ in range(n))  # noqa: E731
    b = fresh(400)
    return b[:355] + fresh(45), b, fresh(45) + b[45:]


def test_chain_of_real_texts_through_the_cli(tmp_path):
    a, b, c = _chain_texts()
    d = NearDedup()
    est = lambda x, y: float(np.mean(d.signature(x) == d.signature(y)))  # noqa: E731
    assert est(a, b) >= 0.7 and est(b, c) >= 0.7 and est(a, c) < 0.7  # the chain, by the signatures
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": t}, ensure_ascii=False) + "\n"
                           for k, t in zip("ABC", (a, b, c))), encoding="utf-8")
    profile = tmp_path / "near.yaml"
    profile.write_text("steps:\n  - near_dedup: {}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(normalize, [str(src), "-o", str(out), "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["A", "C"]
    streaming = NearDedup()  # the streaming check agrees on this chain
    assert [streaming.check(streaming.fingerprint(t)) is True for t in (a, b, c)] == [True, False, True]


def _corpus(n: int, seed: int) -> list[str]:
    """Texts made of the labelled set's clean texts, with edited copies among them."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        if texts and rng.random() < 0.3:
            base = rng.choice(texts)
            cut = rng.randrange(len(base))
            texts.append(base[:cut] + rng.choice("、。あ") + base[cut + 1:])  # one character changed
        else:
            texts.append("\n".join(rng.sample(KEEP, 2)))
    return texts


@pytest.mark.parametrize("verify", [True, False])
def test_staged_equals_streaming_on_edited_copies(tmp_path, verify):
    texts = _corpus(300, seed=2)
    streaming = NearDedup(verify=verify)
    expected = [k for k, t in enumerate(texts) if streaming.check(streaming.fingerprint(t)) is True]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": t}, ensure_ascii=False) + "\n" for k, t in enumerate(texts)),
                   encoding="utf-8")
    profile = tmp_path / "near.yaml"
    profile.write_text(f"steps:\n  - near_dedup: {{verify: {str(verify).lower()}}}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(normalize, [str(src), "-o", str(out), "--profile", str(profile),
                                            "--partition-size", "20KB"])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept == expected and 150 < len(kept) < 250


@pytest.mark.parametrize("size", ["300", "7KB"])
def test_partition_boundaries_and_task_sizes_do_not_change_anything(tmp_path, size):
    def run(name, *extra):
        out, rej, rep = (tmp_path / f"{name}.{s}" for s in ("jsonl.zst", "rej.jsonl", "json"))
        result = CliRunner().invoke(normalize, [str(LABELLED), str(DATA / "golden_in.jsonl"), "--skip-bad",
                                                "-o", str(out), "--rejects", str(rej), "--report", str(rep), *extra])
        assert result.exit_code == 0, result.output
        report = json.loads(rep.read_text(encoding="utf-8"))
        return out.read_bytes(), rej.read_bytes(), report["steps"], report["read"], report["engine"]["partitions"]

    one = run("one")
    cut = run("cut", "--partition-size", size, "--dedup-task-size", "20KB")  # many map ranges too
    assert cut[:4] == one[:4] and cut[4] > one[4] == 2
