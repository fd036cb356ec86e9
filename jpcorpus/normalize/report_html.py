"""A self-contained HTML page of a normalize run: what each filter measured, kept and dropped.

One file, no scripts, no fonts, no network: the counts per step and reason, a
histogram (inline SVG) of every filter's measure with its thresholds marked,
and for every drop reason a few examples (the first lines of the document and
its measured value) under an anchor ``#reason-<reason>``, so that a user can
see at a glance whether a threshold suits their corpus.

Made by ``jpcorpus normalize ... --report-html report.html`` (examples taken
during the run) or afterwards by ``jpcorpus report REJECTS.jsonl --report
REPORT.json -o report.html`` (examples read from the rejects file).

>>> page = render({"profile": "default", "docs_in": 1, "docs_out": 0, "chars_out": 0, "steps": [
...     {"step": "min_length", "kind": "filter", "docs_in": 1, "chars_in": 3, "docs_dropped": 1, "chars_dropped": 3,
...      "docs_out": 0, "chars_out": 0, "reasons": {"too_short": {"docs": 1, "chars": 3}}}]},
...     {"too_short": [{"filter": "min_length", "reason": "too_short", "measure": "chars", "value": 3,
...                     "source": "a.jsonl:1", "id": 1, "chars": 3, "head": "短い。"}]})
>>> 'id="reason-too_short"' in page and "短い。" in page and "<script" not in page
True
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable

from jpcorpus.normalize.report import EXAMPLES_PER_REASON, example_of

_STYLE = """
body{font-family:"Noto Sans CJK JP","IPAGothic","Hiragino Sans","Yu Gothic",Meiryo,sans-serif;margin:1.5em;
max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
td:first-child,th:first-child,td.l{text-align:left}
.hists{display:flex;flex-wrap:wrap;gap:1em}.hist{border:1px solid #ddd;padding:.3em}
.ex{border-left:3px solid #c33;margin:.5em 0;padding:.2em .6em;background:#faf7f7}
pre{white-space:pre-wrap;margin:.2em 0;font-size:90%;font-family:inherit}small{color:#666}
"""
_W, _H, _PAD, _TOP = 340, 120, 18, 28


def render(report: dict[str, Any], examples: dict[str, list[dict]]) -> str:
    """The HTML page for a run's ``report`` (``RunReport.as_dict()``) and its ``examples`` per reason."""
    esc = html.escape
    docs_in, docs_out = report.get("docs_in", 0), report.get("docs_out", 0)
    parts = [f"<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>jpcorpus normalize report"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>normalize: profile {esc(str(report.get('profile')))}</h1>",
             f"<p>{docs_in:,} documents in, <b>{docs_out:,} kept</b> ({_pct(docs_out, docs_in)}), "
             f"{report.get('chars_out', 0):,} characters kept.</p>",
             "<h2>Steps</h2><table><tr><th>step</th><th>docs in</th><th>dropped</th><th>chars in</th>"
             "<th>chars dropped</th><th>reasons</th></tr>"]
    reasons: list[tuple[str, str, dict]] = []
    for step in report.get("steps", []):
        if step.get("kind") == "formatter":
            continue
        links = ", ".join(f"<a href=\"#reason-{esc(r)}\">{esc(r)}</a> {c['docs']:,}" for r, c in step["reasons"].items())
        parts.append(f"<tr><td>{esc(step['step'])}</td><td>{step['docs_in']:,}</td><td>{step['docs_dropped']:,}</td>"
                     f"<td>{step['chars_in']:,}</td><td>{step['chars_dropped']:,}</td><td class=\"l\">{links}</td></tr>")
        reasons += [(step["step"], r, c) for r, c in step["reasons"].items()]
    skipped = (report.get("read") or {}).get("skipped") or {}
    for reason, count in skipped.items():
        parts.append(f"<tr><td>(bad input)</td><td></td><td>{count:,}</td><td></td><td></td>"
                     f"<td class=\"l\"><a href=\"#reason-{esc(reason)}\">{esc(reason)}</a></td></tr>")
        reasons.append(("read", reason, {"docs": count, "chars": 0}))
    parts.append("</table>")
    parts.append("<h2>Measures</h2><p><small>Bars: documents per bin (square-root height); grey kept by the "
                 "filter, red dropped by that measure's rule; dashed red lines: the thresholds.</small></p>")
    for step in report.get("steps", []):
        hists = step.get("histograms") or {}
        if not hists:
            continue
        parts.append(f"<h3>{esc(step['step'])}</h3><div class=\"hists\">")
        for name, hist in hists.items():
            limits = [x for x in step.get("limits", []) if x["measure"] == name]
            parts.append(f"<div class=\"hist\">{_svg(name, hist, limits)}</div>")
        parts.append("</div>")
    parts.append("<h2>Drop reasons</h2>")
    for filter_name, reason, count in reasons:
        parts.append(f"<section id=\"reason-{esc(reason)}\"><h3>{esc(reason)} <small>({esc(filter_name)}: "
                     f"{count['docs']:,} documents, {count['chars']:,} characters)</small></h3>")
        shown = examples.get(reason, [])[:EXAMPLES_PER_REASON]
        if not shown:
            parts.append("<p><small>no examples recorded</small></p>")
        for ex in shown:
            value = "" if ex.get("value") is None else f"{esc(str(ex.get('measure')))} = {_num(ex['value'])}; "
            parts.append(f"<div class=\"ex\"><small>{value}{ex.get('chars', 0):,} characters; "
                         f"{esc(str(ex.get('source')))} id {esc(str(ex.get('id')))}</small>"
                         f"<pre>{esc(ex.get('head') or '')}</pre></div>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _svg(name: str, hist: dict, limits: list[dict]) -> str:
    """An inline SVG bar chart of one measure's histogram with its limits as dashed lines."""
    kept, dropped, edges = hist["kept"], hist["dropped"], hist["edges"]
    log = hist.get("scale") == "log"
    used = [i for i, (a, b) in enumerate(zip(kept, dropped)) if a or b]
    first, last = (0, len(kept) - 1) if not log else (min(used, default=0), max(used, default=0))
    if log:  # show the thresholds too
        for x in limits:
            for bound in (x["low"], x["high"]):
                if bound is not None and bound > 0:
                    b = min(len(kept) - 1, max(0, 1 + int(math.log10(max(bound, 1)) * 10)))
                    first, last = min(first, b), max(last, b)
    bins = list(range(first, last + 1))
    top = max([kept[i] + dropped[i] for i in bins] + [1])
    bw = (_W - 2 * _PAD) / len(bins)
    body = []
    for k, i in enumerate(bins):
        x = _PAD + k * bw
        hk, hd = (_H - _TOP - _PAD) * math.sqrt(kept[i] / top), (_H - _TOP - _PAD) * math.sqrt(dropped[i] / top)
        if hk:
            body.append(f'<rect x="{x:.1f}" y="{_H - _PAD - hk:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                        f'height="{hk:.1f}" fill="#999"/>')
        if hd:
            body.append(f'<rect x="{x:.1f}" y="{_H - _PAD - hk - hd:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                        f'height="{hd:.1f}" fill="#c33"/>')

    def xpos(value: float) -> float:
        if log:
            pos = 0.0 if value < 1 else 1 + math.log10(value) * 10
        else:
            pos = value * len(kept)
        return _PAD + (pos - first) * bw

    for x in limits:
        for bound in (x["low"], x["high"]):
            if bound is not None:
                px = min(max(xpos(bound), _PAD), _W - _PAD)
                body.append(f'<line x1="{px:.1f}" y1="{_TOP - 4}" x2="{px:.1f}" y2="{_H - _PAD}" stroke="#c00" '
                            f'stroke-dasharray="3,2"/>{_limit_label(px, _num(bound))}')
    lo, hi = edges[first], edges[last + 1] if last + 1 < len(edges) else edges[last] * 10 ** 0.1
    total = sum(kept) + sum(dropped)
    skipped = f", {hist['not_judged']:,} not judged" if hist.get("not_judged") else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
            f'aria-label="{html.escape(name)}"><text x="{_PAD}" y="11" font-size="10">{html.escape(name)} '
            f'({total:,} documents{skipped}{", log scale" if log else ""})</text>'
            f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#444"/>'
            + "".join(body) +
            f'<text x="{_PAD}" y="{_H - 4}" font-size="9">{_num(lo)}</text>'
            f'<text x="{_W - _PAD}" y="{_H - 4}" font-size="9" text-anchor="end">{_num(hi)}</text></svg>')


def _limit_label(px: float, text: str) -> str:
    """A threshold's value beside its line, on the side with room (a line near the right edge gets it on its left)."""
    if px > _W / 2:
        return f'<text x="{px - 2:.1f}" y="{_TOP - 6}" font-size="9" fill="#c00" text-anchor="end">{text}</text>'
    return f'<text x="{px + 2:.1f}" y="{_TOP - 6}" font-size="9" fill="#c00">{text}</text>'


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def examples_from_rejects(lines: Iterable[dict], cap: int = EXAMPLES_PER_REASON) -> dict[str, list[dict]]:
    """The first ``cap`` rejects lines of each reason, shortened (:func:`report.example_of`)."""
    out: dict[str, list[dict]] = {}
    for line in lines:
        kept = out.setdefault(line.get("reason", "?"), [])
        if len(kept) < cap:
            kept.append(example_of(line))
    return out


def read_jsonl(path: str | Path) -> Iterable[dict]:
    """Lines of a (possibly compressed) rejects file; a line that is not JSON stops with file:line."""
    import io

    from jpcorpus.readers import open_binary

    with io.TextIOWrapper(open_binary(Path(path)), encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg}); pass the --rejects file "
                                     "of a normalize run") from None


def write_html(path: str | Path, page: str) -> None:
    """Write ``page`` to ``path`` under a temporary name, renamed at the end."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
