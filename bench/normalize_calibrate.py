"""Measure every filter of a profile on clean books and news and on junk made from them.

    python bench/normalize_calibrate.py --profile default --min-chars 200
    python bench/normalize_calibrate.py --profile web --min-chars 400 --png docs/img

Clean text: every work of ``../shared/corpus/aozora_bench_100mb.jsonl.gz`` (2,208
Aozora Bunko books) and every article of ``wikinews_ja.jsonl.gz`` (3,669),
normalized by the profile's formatters; only documents of at least
``--min-chars`` characters are counted. Each filter measures every document,
whatever the filters before it decided, so the table says what each rule
would drop alone ("alone") and what it drops in the profile's order ("first").

Junk: for a deterministic sample of those documents (every 12th article and
every 24th book), the kinds of bad text a corpus is full of, made from the
clean text itself (:func:`junk_kinds`): mojibake, repeated lines and
sentences, noun and katakana keyword lists, snippet lists, menus, kana
stripped out. The texts never leave /tmp; only numbers are printed.

Prints Markdown for docs/normalize.md: per measure, the clean and junk
quantiles and each limit's drop counts; ``--png DIR`` also draws one small
histogram per measure (needs matplotlib).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
SOURCES = {"books": ("aozora_bench_100mb.jsonl.gz", 24), "news": ("wikinews_ja.jsonl.gz", 12)}


def read(name: str, limit: int | None = None, corpus: Path = CORPUS):
    with gzip.open(corpus / name, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            yield json.loads(line)["text"]


def junk_kinds(text: str, seed: int) -> dict[str, str]:
    """Bad text of several kinds, made from one clean document."""
    from jpcorpus.normalize.morphology import NOUN, _tokenizer

    rng = random.Random(seed)
    lines = [line for line in text.split("\n") if len(line.strip()) > 10]
    sentences = [s for s in re.findall(r"[^。\n]+。", text) if len(s) > 8] or [text[:40] + "。"]
    head = text[:700]
    nouns, katakana = [], re.findall(r"[ァ-ヺー]{2,}", text)
    for m in _tokenizer("C").tokenize(head[:3000]):
        if m.part_of_speech()[0] == "名詞" and len(m.surface()) > 1:
            nouns.append(m.surface())
    nouns = nouns or ["項目"]
    out = {
        "mojibake_cp932": head.encode("utf-8").decode("cp932", errors="replace"),
        "mojibake_cp1252": head.encode("utf-8").decode("cp1252", errors="replace"),
        "repeated_sentence": rng.choice(sentences) * 8,
        "repeated_lines": "\n".join([rng.choice(lines or sentences)] * 5 + (lines or sentences)[:1]),
        "noun_list": " ".join(rng.choice(nouns) for _ in range(60)),
        "noun_list_comma": "、".join(rng.choice(nouns) for _ in range(50)),
        "menu": "\n".join(rng.choice(nouns) for _ in range(20)),
        "snippets": "\n".join(s[:25] + "…" for s in rng.sample(sentences, min(8, len(sentences)))),
        "kana_stripped": re.sub(r"[ぁ-ゖァ-ヺー]", "", head),
        "table": "\n".join(f"{rng.choice(nouns)} {rng.randint(1, 99) * 100}円 {rng.choice(nouns)}"
                           for _ in range(15)),
    }
    if len(katakana) >= 5:
        out["katakana_keywords"] = "".join(rng.choice(katakana) for _ in range(30))
    return out


def measure_all(steps, text: str) -> tuple[dict, list]:
    """Every filter's measures on ``text`` (normalized first), and [(step, reason), ...] of each broken limit."""
    from jpcorpus.document import Document
    from jpcorpus.normalize import charstats, morphology
    from jpcorpus.normalize.steps import Formatter

    doc = Document(text)
    values, broken = {}, []
    for step in steps:
        if isinstance(step, Formatter):
            doc.text = step.format(doc.text)
            continue
        step.prepare([doc])
        got = step.measure(doc)
        values.update(got)
        for limit in step._limits():
            if limit.broken_by(got.get(limit.measure)):
                broken.append((step.name, limit.reason))
    charstats.clear_caches()
    morphology.clear_caches()
    return {"chars": len(doc.text), **values}, broken


def quantiles(values: list[float], qs=(0.001, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999)) -> list[float]:
    v = sorted(values)
    return [v[min(len(v) - 1, int(q * len(v)))] for q in qs] if v else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help=f"folder of the corpora (default {CORPUS})")
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--limit", type=int, default=None, help="first N documents of each corpus (default: all)")
    ap.add_argument("--png", default=None, help="folder for one histogram PNG per measure")
    ap.add_argument("--dump", default=None, help="write every document's measures here (JSON Lines, no text)")
    args = ap.parse_args()

    from jpcorpus.normalize.profiles import build_steps, load_profile

    steps, _ = build_steps(load_profile(args.profile))
    started = time.perf_counter()
    clean, junk = defaultdict(list), defaultdict(list)  # source -> [(values, broken)]
    dump = open(args.dump, "w") if args.dump else None
    for source, (name, every) in SOURCES.items():
        for i, text in enumerate(read(name, args.limit, args.corpus)):
            values, broken = measure_all(steps, text)
            if values["chars"] >= args.min_chars:
                clean[source].append((values, broken))
                if dump:
                    dump.write(json.dumps({"source": source, "i": i, "values": values, "broken": broken}) + "\n")
            if i % every == 0:
                for kind, bad in junk_kinds(text, i).items():
                    junk[kind].append(measure_all(steps, bad))
    print(f"measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report(steps, clean, junk, args)


def report(steps, clean: dict, junk: dict, args) -> None:
    from jpcorpus.normalize.steps import Formatter

    filters = [s for s in steps if not isinstance(s, Formatter)]
    print(f"### Profile `{args.profile}`: clean documents of {args.min_chars}+ characters\n")
    print("| filter | reason | limit | books dropped alone | news dropped alone | books first | news first "
          "| junk caught alone |")
    print("|---|---|---|---|---|---|---|---|")
    all_junk = [item for items in junk.values() for item in items]
    firsts = {src: Counter(b[0][1] for _, b in items if b) for src, items in clean.items()}
    for step in filters:
        for limit in step._limits():
            bound = (f"≥ {limit.low:g}" if limit.low is not None else "") + (f"≤ {limit.high:g}" if limit.high is not None else "")
            alone = {src: sum((step.name, limit.reason) in b for _, b in items) for src, items in clean.items()}
            caught = sum((step.name, limit.reason) in b for _, b in all_junk)
            print(f"| {step.name} | {limit.reason} | {limit.measure} {bound} | "
                  f"{alone.get('books', 0)} | {alone.get('news', 0)} | {firsts['books'][limit.reason]} | "
                  f"{firsts['news'][limit.reason]} | {caught}/{len(all_junk)} |")
    for src, items in clean.items():
        dropped = sum(bool(b) for _, b in items)
        print(f"\n{src}: {dropped} of {len(items)} dropped ({100 * dropped / max(1, len(items)):.2f}%), "
              f"keep rate {1 - dropped / max(1, len(items)):.4f}")
    caught = sum(bool(b) for _, b in all_junk)
    print(f"junk: {caught} of {len(all_junk)} dropped (recall {caught / max(1, len(all_junk)):.4f}); by kind: "
          + ", ".join(f"{k} {sum(bool(b) for _, b in v)}/{len(v)}" for k, v in sorted(junk.items())))
    beyond = sum(any(r != "too_short" for _, r in b) for _, b in all_junk)
    print(f"junk dropped by a rule other than the length minimum: {beyond} of {len(all_junk)} "
          f"({beyond / max(1, len(all_junk)):.4f})")
    print("\nQuantiles (0.1%, 1%, 5%, 50%, 95%, 99%, 99.9%) of each measure:\n")
    print("| measure | books | news | junk (median per kind) |")
    print("|---|---|---|---|")
    measures = [lim.measure for s in filters for lim in s._limits()]
    for m in dict.fromkeys(measures):
        cells = []
        for src in ("books", "news"):
            vals = [v[m] for v, _ in clean.get(src, []) if v.get(m) is not None]
            cells.append(" ".join(f"{q:.3g}" for q in quantiles(vals)))
        kinds = []
        for kind, items in sorted(junk.items()):
            vals = [v[m] for v, _ in items if v.get(m) is not None]
            if vals:
                kinds.append(f"{kind} {quantiles(vals, (0.5,))[0]:.3g}")
        print(f"| {m} | {cells[0]} | {cells[1]} | {', '.join(kinds)} |")
    if args.png:
        draw(filters, clean, junk, Path(args.png), args.profile)


def draw(filters, clean, junk, folder: Path, profile: str) -> None:
    """One small PNG per filter: each measure's distribution on books, news and junk, thresholds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for step in filters:
        by_measure = _by_measure(step)
        fig, axes = plt.subplots(1, len(by_measure), figsize=(3.2 * len(by_measure), 2.0), dpi=72, squeeze=False)
        for ax, (m, limits) in zip(axes[0], by_measure.items()):
            series = {"books": [v[m] for v, _ in clean.get("books", []) if v.get(m) is not None],
                      "news": [v[m] for v, _ in clean.get("news", []) if v.get(m) is not None],
                      "junk": [v[m] for items in junk.values() for v, _ in items if v.get(m) is not None]}
            allv = [x for vals in series.values() for x in vals]
            log = not m.endswith("_share")
            lo, hi = (max(1.0, min(allv, default=1)), max(allv, default=10) * 1.1) if log else (0.0, 1.0)
            bins = np.geomspace(lo, max(hi, lo * 10), 40) if log else np.linspace(lo, hi, 41)
            for label, vals in series.items():
                if vals:
                    ax.hist(np.clip(vals, bins[0], bins[-1]), bins=bins, histtype="step", density=True, label=label)
            for limit in limits:
                for x in (limit.low, limit.high):
                    if x is not None:
                        ax.axvline(x, color="red", linestyle="--", linewidth=1)
            if log:
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(m, fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=5)
        fig.tight_layout()
        fig.savefig(folder / f"{profile}_{step.name}.png")
        plt.close(fig)


def _by_measure(step) -> dict:
    out = defaultdict(list)
    for limit in step._limits():
        out[limit.measure].append(limit)
    return out


if __name__ == "__main__":
    main()
