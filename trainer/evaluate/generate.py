"""Sample continuations of Japanese prompts from two models, for human evaluation.

Both models see the same prompts with the same decoding settings and the same
seed per prompt (``seed + prompt index``, re-seeded before every generation), so
a rerun on the same machine reproduces the page and the two columns differ only
by the weights. The page is Markdown: a settings table, then for each prompt a
two-column table (adapted | base). It holds nothing time-dependent, so two
pages diff cleanly.
"""

from __future__ import annotations

import gc
import html
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts" / "ja_default.txt"


@dataclass(frozen=True)
class DecodingSettings:
    max_new_tokens: int = 128
    do_sample: bool = True
    """False: greedy decoding (temperature and top_p are then unused)."""
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    """Above 1 discourages the loops small models fall into."""
    seed: int = 1234
    samples: int = 1
    """Continuations per prompt and model (seeds ``seed + 1000 * sample + prompt index``)."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {self.max_new_tokens} must be at least 1")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("--temperature must be > 0 and --top-p in (0, 1] when sampling")
        if self.samples < 1:
            raise ValueError(f"--samples {self.samples} must be at least 1")


def read_prompts(path: str | Path = DEFAULT_PROMPTS) -> list[str]:
    r"""One prompt per line; ``#`` comment lines and blank lines are skipped; ``\n`` is a line break.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.txt"
    >>> _ = p.write_text("# note\n吾輩は\n\n「こんにちは」\\n「", encoding="utf-8")
    >>> read_prompts(p)
    ['吾輩は', '「こんにちは」\n「']
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line.replace("\\n", "\n") for line in lines if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line; '#' starts a comment)")
    return prompts


def generate_all(model_dir: str, prompts: list[str], s: DecodingSettings, device: str = "auto",
                 dtype: str = "auto", progress: bool = True) -> list[list[str]]:
    """``[prompt][sample]`` continuations (prompt text excluded) from ``model_dir``."""
    import torch
    from tqdm import tqdm

    from trainer.evaluate.models import load_model, set_determinism

    set_determinism(s.seed)
    loaded = load_model(model_dir, device, dtype)
    tok, out = loaded.tokenizer, []
    sampling = dict(temperature=s.temperature, top_p=s.top_p, top_k=0) if s.do_sample else {}
    for i, prompt in enumerate(tqdm(prompts, desc=f"generate {Path(model_dir).name}", disable=not progress)):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(loaded.device)
        texts = []
        for k in range(s.samples):
            torch.manual_seed(s.seed + 1000 * k + i)
            with torch.inference_mode():
                new = loaded.model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.max_new_tokens,
                    do_sample=s.do_sample, repetition_penalty=s.repetition_penalty,
                    pad_token_id=loaded.context_token_id, **sampling)[0, ids.shape[1]:]
            texts.append(tok.decode(new, skip_special_tokens=True))
        out.append(texts)
    del loaded
    gc.collect()
    return out


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell.

    >>> _cell("a|b\\n<c>")
    'a\\\\|b<br>&lt;c&gt;'
    """
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def render_markdown(prompts: list[str], columns: dict[str, tuple[str, list[list[str]]]],
                    s: DecodingSettings) -> str:
    """``columns``: label -> (model path, continuations from :func:`generate_all`)."""
    lines = ["# Generations", "", "| setting | value |", "|---|---|"]
    lines += [f"| {label} model | `{path}` |" for label, (path, _) in columns.items()]
    lines += [f"| {k} | {v} |" for k, v in asdict(s).items()]
    lines += ["", "The prompt is shown in **bold**; each cell is the model's continuation.", ""]
    labels = list(columns)
    for i, prompt in enumerate(prompts):
        lines += [f"## {i + 1}. {_cell(prompt)}", "", "| " + " | ".join(labels) + " |",
                  "|" + "---|" * len(labels)]
        for k in range(s.samples):
            cells = [f"**{_cell(prompt)}**{_cell(columns[lab][1][i][k])}" for lab in labels]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_generations(model: str, out: str | Path, baseline: str | None = None, prompts_path=DEFAULT_PROMPTS,
                      s: DecodingSettings = DecodingSettings(), device: str = "auto", dtype: str = "auto",
                      progress: bool = True) -> Path:
    """Generate from ``model`` (and ``baseline``) and write the Markdown page to ``out``."""
    prompts = read_prompts(prompts_path)
    columns = {"adapted": (model, generate_all(model, prompts, s, device, dtype, progress))}
    if baseline:
        columns["base"] = (baseline, generate_all(baseline, prompts, s, device, dtype, progress))
    out = Path(out)
    out.write_text(render_markdown(prompts, columns, s) + "\n", encoding="utf-8")
    return out
