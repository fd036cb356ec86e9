"""Precision and recall of the shipped profiles on labelled sets written for this project.

tests/data/normalize/labelled.jsonl (made by make_labelled.py beside it): 32 clean
texts to keep (stories, news, explanations, dialogue, letters, recipes) and 40 to drop
(boilerplate, spam, noun lists, repetition, mojibake, other languages), for the default
profile. labelled_web.jsonl (make_labelled_web.py): 10 clean web pages of 400+
characters and 15 pages a crawl is full of, for the `web` profile.
"""

import json
from collections import Counter
from pathlib import Path

from jpcorpus.normalize.pipeline import run_normalize

LABELLED = Path(__file__).parent / "data" / "normalize" / "labelled.jsonl"
LABELLED_WEB = Path(__file__).parent / "data" / "normalize" / "labelled_web.jsonl"


def _run(path: Path, tmp_path: Path, profile: str) -> tuple[dict, set, dict]:
    """The labelled rows by id, the ids kept and the ids dropped (with their reasons)."""
    rows = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    run_normalize([str(path)], str(tmp_path / "kept.jsonl"), rejects=str(tmp_path / "rejects.jsonl"), profile=profile)
    kept = {json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text(encoding="utf-8").splitlines()}
    dropped = {r["record"]["id"]: r["reason"]
               for r in map(json.loads, (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines())}
    assert kept | set(dropped) == set(rows) and not kept & set(dropped)
    return rows, kept, dropped


def test_default_profile_precision_and_recall(tmp_path):
    rows, kept, dropped = _run(LABELLED, tmp_path, "default")
    assert len(rows) >= 60

    true_drops = sum(rows[i]["label"] == "drop" for i in dropped)
    precision = true_drops / len(dropped)  # of what we dropped, how much was bad
    recall = true_drops / sum(r["label"] == "drop" for r in rows.values())  # of the bad, how much we dropped
    # Reached on this set: precision 1.0, recall 1.0 (the thresholds were set on books and news,
    # docs/normalize.md, not on this set).
    assert precision >= 0.97, [rows[i]["text"][:40] for i in dropped if rows[i]["label"] == "keep"]
    assert recall >= 0.97, [rows[i]["text"][:40] for i in kept if rows[i]["label"] == "drop"]
    assert all(rows[i]["label"] == "keep" for i in kept)  # every bad kind is caught on this set

    reasons = Counter(reason for reason in dropped.values())
    assert reasons["mojibake"] == 10 and reasons["not_japanese"] >= 5


def test_web_profile_precision_and_recall(tmp_path):
    rows, kept, dropped = _run(LABELLED_WEB, tmp_path, "web")
    assert len(rows) >= 25
    true_drops = sum(rows[i]["label"] == "drop" for i in dropped)
    precision = true_drops / len(dropped)
    recall = true_drops / sum(r["label"] == "drop" for r in rows.values())
    # Reached on this set: recall 1.0, precision 1.0. (With Gopher's character 5-gram limit
    # of 0.15 over the whole page it dropped the clean page on moving house, which says
    # "の届け出を" in several places: precision was 15/16. The limits are now set for
    # characters, on books and news, within 1,000-character windows: docs/normalize.md.)
    assert recall == 1.0, [rows[i]["text"][:40] for i in kept if rows[i]["label"] == "drop"]
    assert precision >= 15 / 16, [rows[i]["text"][:40] for i in dropped if rows[i]["label"] == "keep"]
    # the drops are decided by many different filters, not only the 400-character minimum
    reasons = {dropped[i] for i in dropped if rows[i]["label"] == "drop"}
    assert {"mojibake", "not_japanese", "too_many_ellipsis_lines", "boilerplate_lines", "mean_sentence_too_long",
            "duplicate_ngram_share", "exact_duplicate", "near_duplicate", "too_short"} <= reasons
    # the default profile keeps every clean page (its thresholds are looser)
    _, kept_default, _ = _run(LABELLED_WEB, tmp_path, "default")
    assert {i for i in rows if rows[i]["label"] == "keep"} <= kept_default
