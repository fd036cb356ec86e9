"""Clean text in the genres the filters once dropped is kept by the default profile.

tests/data/normalize/clean_genres.jsonl (written for this project by make_clean_genres.py
beside it): chapters separated by dividers and numbered headings, verse with refrains,
haiku, katakana-kanji orthography (an essay and a set of rules), a children's text in
katakana, paragraphs about foreign people and a foreign city, data-heavy news, a diary,
dialogue, classical prose of long sentences, a technical explanation. The labelled sets
(test_normalize_labelled.py) check beside this that junk is still dropped.
"""

import json
from pathlib import Path

from jpcorpus.document import Document
from jpcorpus.normalize.pipeline import process_document, _new_counts
from jpcorpus.normalize.profiles import build_steps, load_profile

CLEAN = Path(__file__).parent / "data" / "normalize" / "clean_genres.jsonl"


def test_default_profile_keeps_every_clean_genre():
    rows = [json.loads(line) for line in CLEAN.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 15 and len({r["kind"] for r in rows}) >= 12
    steps, _ = build_steps(load_profile("default"))
    dropped = {}
    for row in rows:
        result = process_document(Document(row["text"]), steps, _new_counts(steps))
        if result[0] != "keep":
            dropped[row["id"]] = (row["kind"], result[3], result[4])
    assert dropped == {}


def test_lineated_verse_is_not_judged_by_sentence_length():
    from jpcorpus.normalize.line_filters import SentenceLength

    verse = next(json.loads(line)["text"] for line in CLEAN.read_text(encoding="utf-8").splitlines()
                 if json.loads(line)["kind"] == "verse")
    step = SentenceLength(min_mean=30)
    assert step.measure(Document(verse))["mean_sentence_chars"] is None
    assert SentenceLength(min_mean=30, judge_lineated=True).filter(Document(verse)) == (False, "mean_sentence_too_short")
