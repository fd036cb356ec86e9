"""Steps beyond their doctests: Sudachi on long texts, near-duplicate behaviour, workers."""

import json
from pathlib import Path

import numpy as np

from jpcorpus.normalize import pipeline
from jpcorpus.normalize.dedup import NearDedup
from jpcorpus.normalize.morphology import SUDACHI_MAX_BYTES, analyze, split_for_sudachi

LABELLED = Path(__file__).parent / "data" / "normalize" / "labelled.jsonl"
KEEP = [r["text"] for r in map(json.loads, LABELLED.read_text(encoding="utf-8").splitlines()) if r["label"] == "keep"]


def test_long_text_is_split_for_sudachi_and_analyzed_whole():
    one = "\n".join(KEEP)
    long = "\n".join([one] * 10)
    assert len(long.encode("utf-8")) > 2 * SUDACHI_MAX_BYTES
    pieces = split_for_sudachi(long)
    assert "".join(pieces) == long and len(pieces) > 2
    assert all(len(p.encode("utf-8")) < SUDACHI_MAX_BYTES for p in pieces)
    assert abs(analyze(long).words - 10 * analyze(one).words) <= 20  # nothing dropped at the cuts


def test_split_without_any_boundary_is_still_lossless():
    text = "あ" * 40_000  # no newline, no 。: cut at character boundaries
    pieces = split_for_sudachi(text)
    assert "".join(pieces) == text and all(len(p.encode("utf-8")) < SUDACHI_MAX_BYTES for p in pieces)
    assert analyze(text).words > 0


def test_near_dedup_catches_small_edits_not_different_texts():
    d = NearDedup()
    base = KEEP[0] + KEEP[1]
    assert d.check(d.fingerprint(base)) is True
    assert d.check(d.fingerprint(base.replace("雪だった", "雨だった"))) == (False, "near_duplicate")
    assert all(d.check(d.fingerprint(text + KEEP[-1])) is True for text in KEEP[2:12])


def test_fingerprints_are_the_same_in_every_process():
    text = KEEP[3]
    assert NearDedup().fingerprint(text).tolist() == NearDedup().fingerprint(text).tolist()
    assert NearDedup(seed=2).fingerprint(text).tolist() != NearDedup().fingerprint(text).tolist()


def test_output_identical_for_1_and_2_workers_over_many_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_DOCS", 4)
    outputs = []
    for workers in (1, 2):
        out, rej = tmp_path / f"o{workers}.jsonl", tmp_path / f"r{workers}.jsonl"
        report = pipeline.run_normalize([str(LABELLED), str(LABELLED)], str(out), rejects=str(rej), workers=workers)
        outputs.append((out.read_bytes(), rej.read_bytes(), json.dumps(report.as_dict()["steps"])))
        assert report.docs_out == 32  # the second copy of the file is all duplicates
    assert outputs[0] == outputs[1]


def test_whitespace_ranges_are_exactly_str_isspace():
    from jpcorpus.normalize.charstats import WHITESPACE

    listed = [c for lo, hi in WHITESPACE for c in range(lo, hi + 1)]
    assert listed == [c for c in range(0x110000) if chr(c).isspace()]


def test_batch_fingerprints_equal_one_at_a_time():
    d = NearDedup()
    texts = KEEP[:20] + ["", "猫", "短い文", KEEP[0] * 40] + KEEP[20:]  # short, empty and multi-block texts
    batch = d.fingerprints(texts)
    assert [k.tolist() for k in batch] == [d.fingerprints([t])[0].tolist() for t in texts]
    assert [k.tolist() for k in d.fingerprints(KEEP)] == [k.tolist() for k in batch[:20] + batch[24:]]


def _five_gram_jaccard(a: str, b: str) -> float:
    sa, sb = ({t[i:i + 5] for i in range(len(t) - 4)} for t in (a, b))
    return len(sa & sb) / len(sa | sb)


def _edited_pairs():
    """(text, copy with every k-th character changed): 5-gram Jaccard from ~0.3 to ~0.9."""
    import random

    chars = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん日本語文章"
    for seed in range(400):
        rng = random.Random(seed)
        text = "".join(rng.choice(chars) for _ in range(800))
        step = rng.choice([12, 16, 20, 28, 40, 60])
        edited = "".join("ー" if i % step == step // 2 else c for i, c in enumerate(text))
        yield text, edited


def test_near_dedup_verification_keeps_lsh_candidates_that_are_not_similar():
    """Banding alone drops ~1 in 5 pairs at Jaccard 0.6; the verified check keeps them."""
    banded_only = verified = 0
    for text, edited in _edited_pairs():
        plain, checked = NearDedup(verify=False), NearDedup()
        assert plain.check(plain.fingerprint(text)) is True and checked.check(checked.fingerprint(text)) is True
        plain_drop = plain.check(plain.fingerprint(edited)) is not True
        checked_drop = checked.check(checked.fingerprint(edited)) is not True
        j = _five_gram_jaccard(text, edited)
        assert not checked_drop or plain_drop  # verification only ever keeps more
        if j < 0.6:
            banded_only += plain_drop
            verified += checked_drop
        if j > 0.85:
            assert checked_drop, j  # real near duplicates still go
    assert banded_only >= 3 and verified == 0, (banded_only, verified)


def test_near_dedup_memory_counts_the_signatures():
    d = NearDedup()
    before = d.memory_bytes()
    for text in KEEP[:10]:
        d.check(d.fingerprint(text))
    assert d.memory_bytes() - before == 10 * 112 * 2  # 16 bits of each of 112 MinHash values


def test_chunks_step_by_step_equal_documents_one_by_one():
    """process_docs (each step over a chunk or the batch) gives process_document's verdicts and counts."""
    from jpcorpus.document import Document
    from jpcorpus.normalize.profiles import build_steps, load_profile

    texts = [json.loads(line)["text"] for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    assert len(texts) >= 20
    steps, _ = build_steps(load_profile("default"))
    one_counts, chunk_counts = pipeline._new_counts(steps), pipeline._new_counts(steps)
    one = [pipeline.process_document(Document(t), steps, one_counts) for t in texts]
    chunked = pipeline.process_docs([Document(t) for t in texts], steps, chunk_counts)
    as_plain = lambda results: [(r[0], r[1].text, *r[2:]) for r in results]  # noqa: E731
    assert as_plain(chunked) == as_plain(one)
    assert {r[0] for r in one} == {"keep", "drop"} and len({r[2] for r in one if r[0] == "drop"}) > 3
    assert [vars(c) for c in chunk_counts] == [vars(c) for c in one_counts]


def test_chunks_are_bounded_in_documents_and_characters(monkeypatch):
    from jpcorpus.document import Document

    monkeypatch.setattr(pipeline, "CHUNK_DOCS", 3)
    monkeypatch.setattr(pipeline, "CHUNK_CHARS", 10)
    docs = [Document(t) for t in ["ab", "cd", "ef", "gh", "0123456789abc", "x", "yyyyyyyy", "zz"]]
    sizes = [[docs[i].text for i in chunk] for chunk in pipeline._chunks(docs, list(range(len(docs))))]
    assert sizes == [["ab", "cd", "ef"], ["gh"], ["0123456789abc"], ["x", "yyyyyyyy"], ["zz"]]
    assert list(pipeline._chunks(docs, [1, 4, 7])) == [[1], [4], [7]]


def test_word_level_steps_run_over_the_whole_batch(monkeypatch):
    """Character steps go chunk by chunk; the Sudachi steps see every surviving document in turn."""
    from jpcorpus.document import Document
    from jpcorpus.normalize import morphology
    from jpcorpus.normalize.profiles import build_steps, load_profile

    steps, _ = build_steps(load_profile("default"))
    stages = pipeline._stages(steps)
    assert [s.word_level for s in stages] == [False, True]
    assert [steps[k].name for k in stages[1].steps] == [
        "min_words", "noun_ratio", "function_word_ratio", "unknown_word_ratio", "word_ngram_repetition"]
    monkeypatch.setattr(pipeline, "CHUNK_DOCS", 2)
    calls = []
    analyze_many = morphology.analyze_many

    def spy(texts, mode="C"):
        calls.append(list(texts))
        return analyze_many(texts, mode)

    monkeypatch.setattr(morphology, "analyze_many", spy)
    texts = [json.loads(line)["text"] for line in LABELLED.read_text(encoding="utf-8").splitlines()][:12]
    results = pipeline.process_docs([Document(t) for t in texts], steps, pipeline._new_counts(steps))
    reached = [r[1].text for r in results if r[0] == "keep" or r[2] in {steps[k].name for k in stages[1].steps}]
    assert len(reached) >= 6
    # one call, with every document that reached min_words, in order (in chunks of 2
    # there would have been one call per chunk); the later filters find them cached
    assert calls == [reached]
    assert morphology._ANALYSES == {}  # emptied after the batch


def test_ngram_counts_of_a_chunk_equal_those_of_each_text():
    """ngram_counts_many and duplicate_ngram_shares_many (one sort for the chunk) give each text's own numbers."""
    from jpcorpus.normalize import charstats

    rng = np.random.default_rng(7)
    alphabet = list("ねこいぬあいう。")
    texts = ["".join(rng.choice(alphabet, size=int(k))) for k in rng.integers(0, 60, size=40)]
    texts += ["", "ね", "ねこ", texts[3], "ははははは" * 20]  # empty, shorter than n, a repeated text
    texts += ["あいうえおかきくけこさしす。たちつてと、あいうえおかきくけこさしす。なにぬねの"]  # partly repeated
    for n in (1, 2, 3, 5, 10):
        charstats.clear_caches()
        one = [(charstats.top_ngram_count(t, n), charstats.duplicate_ngram_starts(t, n)) for t in texts]
        charstats.clear_caches()
        charstats.ngram_counts_many(texts, n)
        assert all((t, n) in charstats._TOP_COUNTS for t in texts)
        assert [(charstats.top_ngram_count(t, n), charstats.duplicate_ngram_starts(t, n)) for t in texts] == one
        assert max(c for c, _ in one) > 1 and max(d for _, d in one) > 0
        charstats.clear_caches()
        shares = [charstats.duplicate_ngram_share(t, n) for t in texts]
        charstats.clear_caches()
        charstats.duplicate_ngram_shares_many(texts, n)
        assert all((t, n) in charstats._DUP_SHARES for t in texts)
        assert [charstats.duplicate_ngram_starts(t, n) for t in texts] == [d for _, d in one]
        assert [charstats.duplicate_ngram_share(t, n) for t in texts] == shares
        assert 0 < max(shares) and len(set(shares)) >= 3
        for k in [0, 1, 2, 41, 42, len(texts) - 2, len(texts) - 1]:  # a text alone takes another path
            charstats.clear_caches()
            charstats.ngram_counts_many([texts[k]], n)
            charstats.duplicate_ngram_shares_many([texts[k]], n)
            t = texts[k]
            assert (charstats._TOP_COUNTS[(t, n)], charstats._DUP_STARTS[(t, n)]) == one[k]
            assert charstats._DUP_SHARES[(t, n)] == shares[k]
    charstats.clear_caches()
    one = [charstats.char_stats(t) for t in texts + ["ｶﾀｶﾅ　漢字 x\u3000"]]
    charstats.clear_caches()
    assert charstats.char_stats_many(texts + ["ｶﾀｶﾅ　漢字 x\u3000"]) == one
    assert [charstats.char_stats(t) for t in texts] == one[:-1] and one[-1].katakana == 4
    charstats.clear_caches()


def test_whitespace_fast_paths_change_nothing():
    """NormalizeWhitespace skips regex passes it does not need: same text as running them all."""
    import random
    import re

    from jpcorpus.normalize.normalizers import NormalizeWhitespace

    def reference(text: str, max_blank_lines: int, strip_indent: bool) -> str:
        text = re.sub("\r\n|[\r\u2028\u2029\x85\x0b\x0c]", "\n", text)
        text = re.sub("[^\\S\n]+", " ", text).replace(" \n", "\n")
        if strip_indent:
            text = text.replace("\n ", "\n").lstrip(" ")
        text = re.sub("\n{%d,}" % (max_blank_lines + 2), "\n" * (max_blank_lines + 1), text)
        return text.strip("\n ") if strip_indent else text.rstrip("\n ").lstrip("\n")

    rng = random.Random(1)
    pieces = [" ", "  ", "\t", "\u3000", "\n", "\n\n", "\n\n\n\n", "\r\n", "\r", "\u2028", "\x85", "\x0b", "\xa0",
              " \n ", "\u3000\n", "あ", "い", "a"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    for max_blank_lines, strip_indent in [(1, True), (0, False), (2, True)]:
        step = NormalizeWhitespace(max_blank_lines=max_blank_lines, strip_indent=strip_indent)
        assert [step.format(t) for t in texts] == [reference(t, max_blank_lines, strip_indent) for t in texts]


def test_ngram_numbers_equal_a_plain_python_count():
    """The n-gram counts and the duplicate share against counting n-grams with a Counter."""
    from collections import Counter

    from jpcorpus.normalize import charstats

    rng = np.random.default_rng(11)
    texts = ["".join(rng.choice(list("ねこいぬあ。"), size=int(k))) for k in rng.integers(0, 80, size=30)]
    texts.append("あいうえおかきくけこさしす。たちつてと、あいうえおかきくけこさしす。なにぬねの")
    expected: dict[int, list] = {2: [], 5: [], 10: []}  # (top count, duplicate share) of each text
    for n in (2, 5, 10):
        for text in texts:
            grams = [text[i:i + n] for i in range(len(text) - n + 1)]
            counts = Counter(grams)
            covered = {i + k for i, g in enumerate(grams) if counts[g] > 1 for k in range(n)}
            charstats.clear_caches()
            assert charstats.top_ngram_count(text, n) == max(counts.values(), default=0)
            assert charstats.duplicate_ngram_starts(text, n) == sum(c for c in counts.values() if c > 1)
            assert charstats.duplicate_ngram_share(text, n) == (len(covered) / len(text) if text else 0.0)
            expected[n].append((max(counts.values(), default=0), len(covered) / len(text) if text else 0.0))
    for n in (2, 5, 10):  # every text in one chunk: shared bins, candidates from many texts
        charstats.clear_caches()
        charstats.duplicate_ngram_shares_many(texts, n)
        bounds = charstats.top_ngram_bounds_many(texts, n)
        assert [charstats.duplicate_ngram_share(t, n) for t in texts] == [share for _, share in expected[n]]
        assert all(bound >= top for bound, (top, _) in zip(bounds, expected[n]))
        charstats.clear_caches()
        charstats.top_ngram_counts_many(texts, n)  # exact from the fullest bins, no full sort
        assert [charstats._TOP_COUNTS[(t, n)] for t in texts] == [top for top, _ in expected[n]]
        assert sum(bound - top for bound, (top, _) in zip(bounds, expected[n])) <= 3 * len(texts)  # and useful
    charstats.clear_caches()


def test_char_stats_many_returns_cached_texts_when_its_cache_is_full():
    from jpcorpus.normalize import charstats

    charstats.clear_caches()
    charstats.char_stats_many([f"ねこ{i}" for i in range(4 * charstats.CACHE_TEXTS)])
    got = charstats.char_stats_many(["ねこ0", "いぬ", "ねこ0"])  # one cached, one new: the cache overflows
    assert [s.hiragana for s in got] == [2, 2, 2]
    charstats.clear_caches()


def test_top_ngram_share_of_a_prepared_chunk_equals_one_text_at_a_time():
    """TopNgramShare counts a chunk in one sort per n: the same measures as each text alone."""
    from jpcorpus.document import Document
    from jpcorpus.normalize import charstats
    from jpcorpus.normalize.filters import TopNgramShare

    rng = np.random.default_rng(5)
    texts = ["".join(rng.choice(list("ねこいぬあいうえお。、")[:int(a)], size=int(k)))
             for a, k in zip(rng.integers(2, 12, size=300), rng.integers(1, 400, size=300))]
    texts += KEEP
    step = TopNgramShare(max_share={2: 0.2, 3: 0.18, 4: 0.16})
    alone = []
    for t in texts:
        charstats.clear_caches()
        alone.append(step.measure(Document(t)))
    verdicts = [step.judge(v)[0] for v in alone]
    assert 50 < verdicts.count(True) < len(texts) - 50  # both verdicts, plenty of each
    for start in range(0, len(texts), 32):  # as the pipeline runs it: prepare a chunk, then measure each
        charstats.clear_caches()
        chunk = [Document(t) for t in texts[start:start + 32]]
        step.prepare(chunk)
        assert [step.measure(d) for d in chunk] == alone[start:start + 32]
    charstats.clear_caches()


def test_windowed_duplicate_share_does_not_grow_with_length():
    """Over windows, a long text of varied prose scores what its pages score; short texts are unchanged."""
    from jpcorpus.normalize import charstats

    book = "\n".join(KEEP * 3)  # each text three times: across the whole book every 10-gram repeats
    assert len(book) > 10_000
    whole = charstats.windowed_duplicate_shares([book], 10, 0)[0]
    windowed = charstats.windowed_duplicate_shares([book], 10, 2000)[0]
    assert whole > 0.95 and windowed < 0.2, (whole, windowed)
    short = KEEP[:5] + ["あいうえおあいうえお" * 3]
    assert charstats.windowed_duplicate_shares(short, 10, 2000) == [charstats.duplicate_ngram_share(t, 10) for t in short]
    charstats.clear_caches()


def test_windowed_word_repetition_does_not_grow_with_length():
    from jpcorpus.normalize.morphology import analyze
    from jpcorpus.normalize.word_filters import repeated_ngram_share

    ids = analyze("\n".join(KEEP * 3)).word_ids
    assert repeated_ngram_share(ids, 3) > 0.6
    assert repeated_ngram_share(ids, 3, window=1000) < 0.25
    one = analyze(KEEP[0]).word_ids
    assert repeated_ngram_share(one, 3, window=1000) == repeated_ngram_share(one, 3)


def test_noun_runs_count_compounds_once():
    from jpcorpus.normalize.morphology import NOUN, analyze

    dates = analyze("2011年4月7日午後11時32分、ジョン・F・ケネディ国際空港で停電があった。")
    listed = analyze("東京 大阪 名古屋 札幌 福岡")
    assert dates.share(NOUN) > 0.7 and dates.unit_share(NOUN) < 0.5
    assert listed.noun_units == listed.class_counts[NOUN] == 5 and listed.unit_share(NOUN) == 1.0


def _reference_analysis(text: str, mode: str) -> tuple[list, list, list]:
    """Word classes, ids and unknown flags read from every morpheme directly (no table, no batch)."""
    import zlib

    from jpcorpus.normalize import morphology as m

    classes, ids, unknown = [], [], []
    for piece in split_for_sudachi(text):
        for morpheme in m._tokenizer(mode).tokenize(piece):
            word_class = m._CLASS_OF_POS.get(morpheme.part_of_speech()[0], m.OTHER)
            if word_class == m.SYMBOL:
                continue
            classes.append(word_class)
            if morpheme.is_oov():
                ids.append(m.OOV_WORD_ID + zlib.crc32(morpheme.surface().encode()))
                surface = morpheme.surface()
                unknown.append(not (surface.isascii() or m._NAME_OR_NUMBER.fullmatch(surface)))
            else:
                ids.append(morpheme.word_id())
                unknown.append(False)
    return classes, ids, unknown


def test_analysis_equals_reading_every_morpheme(monkeypatch):
    """analyze_many (part of speech once per word id, morphemes read in groups) against the plain reading."""
    from jpcorpus.normalize import morphology as m

    texts = KEEP[:20] + ["吾輩は猫である。2024年UTCにｑｚｘｗｖｋが起きた。", "", "。。、", "ほげほげふがふが" * 3]
    texts.append("\n".join(KEEP) * 4)  # long: several pieces for Sudachi
    monkeypatch.setattr(m, "_WORD_CLASS", np.full(4, m.UNSEEN, dtype=np.uint8))  # nothing learned yet
    monkeypatch.setattr(m, "READ_MORPHEMES", 100)  # many groups, cut inside a text
    for mode in ("C", "A", "C"):  # the second C finds every word id learned
        m.clear_caches()
        got = m.analyze_many(texts, mode)
        for text, a in zip(texts, got):
            classes, ids, unknown = _reference_analysis(text, mode)
            assert a.classes.tolist() == classes and a.word_ids.tolist() == ids and a.unknown.tolist() == unknown
            assert list(a.class_counts) == [classes.count(k) for k in range(m.OTHER + 1)]
            assert a.unknown_count == sum(unknown)
    assert (m._WORD_CLASS != m.UNSEEN).sum() > 100
    assert any(a.unknown_count for a in got) and any(a.word_ids.max(initial=0) >= m.OOV_WORD_ID for a in got)
    m.clear_caches()
