"""docs/troubleshooting.md: every section the code names exists, and every section says symptom, cause, fix."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"


def page_anchors() -> set[str]:
    return set(re.findall(r'<a id="([a-z0-9-]+)"></a>', PAGE.read_text(encoding="utf-8")))


def named_in_code() -> dict[str, list[str]]:
    """Anchor -> files: ``troubleshooting.md#x`` literals, ``#x`` after the TROUBLE/DOCS constants, ``anchor="x"``."""
    patterns = [r"troubleshooting\.md#([a-z0-9-]+)", r"\{(?:TROUBLE|DOCS)\}#([a-z0-9-]+)",
                r"(?<![\w-])anchor(?:: str)? ?= ?\"([a-z0-9-]+)\""]  # not SVG's text-anchor="end"
    found: dict[str, list[str]] = {}
    for path in sorted([*ROOT.glob("jpcorpus/**/*.py"), *ROOT.glob("trainer/**/*.py")]):
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            for anchor in re.findall(pattern, text):
                found.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_anchor_named_in_the_code_exists_in_the_page():
    named = named_in_code()
    assert len(named) >= 15, sorted(named)  # the scan itself works
    missing = {anchor: files for anchor, files in named.items() if anchor not in page_anchors()}
    assert missing == {}


def test_the_page_links_only_to_its_own_sections():
    links = set(re.findall(r"\]\(#([a-z0-9-]+)\)", PAGE.read_text(encoding="utf-8")))
    assert links - page_anchors() == set()


def test_every_section_says_symptom_cause_and_what_to_do():
    text = PAGE.read_text(encoding="utf-8")
    sections = re.split(r'<a id="[a-z0-9-]+"></a>\n', text)[1:]
    assert len(sections) == len(page_anchors()) > 30
    for section in sections[1:]:  # the first is the exit-status table
        heading = section.splitlines()[0]
        assert all(label in section for label in ("**Symptom.**", "**Cause.**", "**What to do.**")), heading


def test_verify_problems_name_sections_of_the_page(tmp_path):
    import numpy as np

    from jpcorpus.indexed_dataset import IndexedDatasetWriter, bin_path
    from jpcorpus.verify import verify_shard

    with IndexedDatasetWriter(tmp_path / "s", np.int32) as writer:
        writer.add_document(np.array([1, 2, 3]))
        writer.finalize()
    bin_path(tmp_path / "s").write_bytes(b"\0\0")
    problems = verify_shard(tmp_path / "s", full=True) + verify_shard(tmp_path / "missing")
    assert {p.anchor for p in problems} <= page_anchors() and len(problems) >= 2
    assert all(f"see docs/troubleshooting.md#{p.anchor}" in str(p) for p in problems)
