"""Precision and recall of the default profile on a labelled set written for this project.

tests/data/normalize/labelled.jsonl (made by make_labelled.py beside it): 32 clean
texts to keep (stories, news, explanations, dialogue, letters, recipes) and 40 to drop
(boilerplate, spam, noun lists, repetition, mojibake, other languages).
"""

import json
from collections import Counter
from pathlib import Path

from jpcorpus.normalize.pipeline import run_normalize

LABELLED = Path(__file__).parent / "data" / "normalize" / "labelled.jsonl"


def test_default_profile_precision_and_recall(tmp_path):
    rows = {r["id"]: r for r in map(json.loads, LABELLED.read_text(encoding="utf-8").splitlines())}
    assert len(rows) >= 60
    run_normalize([str(LABELLED)], str(tmp_path / "kept.jsonl"), rejects=str(tmp_path / "rejects.jsonl"))
    kept = {json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text(encoding="utf-8").splitlines()}
    dropped = {r["record"]["id"]: r["reason"]
               for r in map(json.loads, (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines())}
    assert kept | set(dropped) == set(rows) and not kept & set(dropped)

    true_drops = sum(rows[i]["label"] == "drop" for i in dropped)
    precision = true_drops / len(dropped)  # of what we dropped, how much was bad
    recall = true_drops / sum(r["label"] == "drop" for r in rows.values())  # of the bad, how much we dropped
    # Reached on this set: precision 1.0, recall 1.0.
    assert precision >= 0.95, [rows[i]["text"][:40] for i in dropped if rows[i]["label"] == "keep"]
    assert recall >= 0.95, [rows[i]["text"][:40] for i in kept if rows[i]["label"] == "drop"]
    assert all(rows[i]["label"] == "keep" for i in kept)  # every bad kind is caught on this set

    reasons = Counter(reason for reason in dropped.values())
    assert reasons["mojibake"] == 10 and reasons["not_japanese"] >= 5
