"""Profiles: which steps run, in which order, with which thresholds.

A profile is a YAML or TOML file with one key, ``steps``: a list of one-key
mappings ``step_name: {parameter: value}``. The shipped ones live in
``jpcorpus/profiles/`` (``default``, ``web``) and each opens with the command
that uses it. Pass ``--profile NAME`` for a shipped one or ``--profile FILE``
for your own.

Per-document steps come first in the order listed; deduplication steps
(``exact_dedup``, ``near_dedup``) must come last, because they run in the
main process in input order after the parallel steps.

>>> steps, dedups = build_steps(load_profile("default"))
>>> steps[0].name, dedups[-1].name
('unicode_nfkc', 'near_dedup')
>>> build_steps({"steps": [{"min_length": {"min_chrs": 10}}]})
Traceback (most recent call last):
...
ValueError: profile step min_length: unknown parameter 'min_chrs' (known: min_chars)
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from jpcorpus.normalize import dedup, filters, line_filters, normalizers, web_filters, word_filters
from jpcorpus.normalize.steps import Step

STEP_TYPES: dict[str, type[Step]] = {cls.name: cls for cls in (
    normalizers.UnicodeNfkc, normalizers.RemoveInvisible, normalizers.NormalizeWhitespace,
    filters.MinLength, filters.JapaneseFraction, filters.HiraganaFraction, filters.KanaFraction,
    filters.KatakanaFraction, line_filters.SentenceLength, line_filters.EllipsisLines, line_filters.DuplicateLines,
    filters.TopNgramShare,
    filters.DuplicateNgramShare, web_filters.Mojibake, web_filters.BoilerplateLines,
    word_filters.MinWords, word_filters.NounRatio, word_filters.FunctionWordRatio,
    word_filters.UnknownWordRatio, word_filters.WordNgramRepetition,
    dedup.ExactDedup, dedup.NearDedup,
)}


def shipped_profiles() -> list[str]:
    """Names of the profiles that come with jpcorpus."""
    folder = resources.files("jpcorpus") / "profiles"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith((".yaml", ".toml")))


def load_profile(spec: str) -> dict[str, Any]:
    """Read a profile: a shipped name (``default``, ``web``) or a .yaml/.yml/.toml path."""
    if spec in shipped_profiles():
        text = (resources.files("jpcorpus") / "profiles" / f"{spec}.yaml").read_text(encoding="utf-8")
        return _parse(text, f"{spec}.yaml")
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--profile {spec!r}: not a shipped profile ({', '.join(shipped_profiles())}) "
                         "and no such file")
    return _parse(path.read_text(encoding="utf-8"), path.name)


def _parse(text: str, name: str) -> dict[str, Any]:
    if name.endswith(".toml"):
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"profile {name}: not valid TOML ({exc})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"profile {name}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"steps"} or not isinstance(data["steps"], list):
        raise ValueError(f"profile {name}: expected one top-level key 'steps' holding a list of steps")
    return data


def build_steps(profile: dict[str, Any]) -> tuple[list[Step], list[dedup.Deduplicator]]:
    """Build the per-document steps and the deduplicators, in order, from a loaded profile."""
    steps: list[Step] = []
    dedups: list[dedup.Deduplicator] = []
    for entry in profile.get("steps", []):
        step = _build_one(entry)
        if isinstance(step, dedup.Deduplicator):
            dedups.append(step)
        elif dedups:
            raise ValueError(f"profile step {step.name}: per-document steps must come before "
                             f"{dedups[0].name} (deduplication runs last, in input order)")
        else:
            steps.append(step)
    return steps, dedups


def _build_one(entry: Any) -> Step:
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError(f"profile step {entry!r}: write each step as 'name: {{parameter: value}}'")
    (name, params), = entry.items()
    if name not in STEP_TYPES:
        raise ValueError(f"profile step {name!r}: unknown step (known: {', '.join(sorted(STEP_TYPES))})")
    cls = STEP_TYPES[name]
    params = params or {}
    known = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in known:
            raise ValueError(f"profile step {name}: unknown parameter {key!r} (known: {', '.join(known) or 'none'})")
    return cls(**params)
