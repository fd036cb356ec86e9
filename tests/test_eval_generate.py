"""trainer generate: prompts file, reproducible side-by-side page."""

from __future__ import annotations

from click.testing import CliRunner

from test_eval_fixtures import tiny_models  # noqa: F401


def test_default_prompts_are_japanese_and_about_ten():
    from trainer.evaluate.generate import DEFAULT_PROMPTS, read_prompts

    prompts = read_prompts(DEFAULT_PROMPTS)
    assert 8 <= len(prompts) <= 15
    assert all(any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in p) for p in prompts)
    assert any("\n" in p for p in prompts)  # the dialogue prompt keeps its line break


def test_generate_cli_is_reproducible_and_side_by_side(tiny_models, tmp_path):
    from trainer.cli.evaluate import generate

    prompts = tmp_path / "p.txt"
    prompts.write_text("# two prompts\n吾輩は猫である。\n表|記号<b>\n", encoding="utf-8")
    pages = []
    for name in ("a.md", "b.md"):
        out = tmp_path / name
        result = CliRunner().invoke(generate, [
            tiny_models[0], "--baseline", tiny_models[1], "--prompts", str(prompts), "-o", str(out),
            "--max-new-tokens", "8", "--samples", "2", "--no-progress"])
        assert result.exit_code == 0, result.output
        pages.append(out.read_text(encoding="utf-8"))
    assert pages[0] == pages[1]
    page = pages[0]
    assert "| adapted | base |" in page and "| seed | 1234 |" in page
    assert "## 1. 吾輩は猫である。" in page and "## 2. 表\\|記号&lt;b&gt;" in page
    rows = [line for line in page.splitlines() if line.startswith("| **")]
    assert len(rows) == 4  # 2 prompts x 2 samples, each row with both models


def test_generate_rejects_bad_settings(tiny_models):
    from trainer.cli.evaluate import generate

    result = CliRunner().invoke(generate, [tiny_models[0], "--temperature", "0"])
    assert result.exit_code != 0 and "--temperature" in result.output
