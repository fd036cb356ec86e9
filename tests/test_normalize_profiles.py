"""Every shipped profile loads, opens with the command that uses it, and only names known steps."""

from importlib import resources

import pytest

from jpcorpus.normalize.profiles import build_steps, load_profile, shipped_profiles
from jpcorpus.normalize.steps import Formatter


def test_the_shipped_profiles_are_there():
    assert shipped_profiles() == ["default", "web"]


@pytest.mark.parametrize("name", shipped_profiles())
def test_shipped_profile_loads_and_opens_with_its_command(name):
    text = (resources.files("jpcorpus") / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")
    assert text.startswith("# jpcorpus normalize ")
    if name != "default":
        assert f"--profile {name}" in text.splitlines()[0]
    steps, dedups = build_steps(load_profile(name))
    assert [s.name for s in steps[:3]] == ["unicode_nfkc", "remove_invisible", "normalize_whitespace"]
    assert all(not isinstance(s, Formatter) for s in steps[3:])
    morph = [i for i, s in enumerate(steps) if s.word_level]
    cheap = [i for i, s in enumerate(steps[3:], start=3) if not s.word_level]
    assert morph and max(cheap) < min(morph)  # Sudachi sees only what the cheap filters kept
    assert [d.name for d in dedups] == ["exact_dedup", "near_dedup"]


def test_own_toml_profile(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('# jpcorpus normalize in.jsonl -o out.jsonl --profile mine.toml\n'
                    '[[steps]]\nunicode_nfkc = {}\n[[steps]]\nmin_length = {min_chars = 5}\n', encoding="utf-8")
    steps, dedups = build_steps(load_profile(str(path)))
    assert [s.name for s in steps] == ["unicode_nfkc", "min_length"] and steps[1].min_chars == 5 and not dedups
