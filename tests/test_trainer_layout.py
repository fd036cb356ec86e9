"""The trainer package's layout: imports run one way, no two modules import each other,
and docs/trainer.md's package map lists exactly the modules on disk (parsed, no imports)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trainer"

# subpackage -> the other subpackages it may import (top-level modules count as "top")
ALLOWED = {
    "cli": {"run", "convert", "evaluate"},
    "run": {"megatron", "convert"},
    "convert": {"megatron"},
    "megatron": set(),
    "evaluate": set(),
    "top": {"legacy"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    if parts[1] == "legacy_names":
        return "legacy"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "top"


def _trainer_imports(path: Path) -> set[str]:
    """Every trainer module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "trainer"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trainer":
            for alias in node.names:  # "from trainer.megatron import layers" names a module
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file() \
                    or (ROOT / Path(*candidate.split("."))).is_dir()
                found.add(candidate if is_module else node.module)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_imports_run_one_way():
    wrong = []
    for name, path in _modules().items():
        group = _group(name)
        for imported in _trainer_imports(path):
            other = _group(imported)
            if other != group and other not in ALLOWED[group] and imported != "trainer":
                wrong.append(f"{name} ({group}) imports {imported} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {m for m in _trainer_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for name in sorted(graph):
        visit(name)
    # a package's __init__ importing its own submodule is no cycle of concern
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not cycles, cycles


def test_package_map_in_docs_matches_the_files():
    text = (ROOT / "docs" / "trainer.md").read_text()
    block = text.split("<!-- package map", 1)[1].split("<!-- end of package map -->", 1)[0]
    listed = re.findall(r"^\| `(trainer/[\w/]+\.py)` \|", block, flags=re.M)
    on_disk = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py"))
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == on_disk, (f"missing from the map: {sorted(set(on_disk) - set(listed))}; "
                                       f"map lines without a module: {sorted(set(listed) - set(on_disk))}")


def test_every_plugin_names_its_upstream_and_guard_test():
    for path in sorted((PACKAGE / "megatron").glob("*.py")) + [PACKAGE / "convert" / "importer.py"]:
        if path.name in ("__init__.py", "unwrap.py"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert re.search(r"(megatron-core|nemo-toolkit) \d+\.\d+", doc), f"{path}: no upstream version"
        guards = re.findall(r"tests/(test_\w+\.py)", doc)
        assert guards, f"{path}: names no guard test"
        for guard in guards:
            assert (ROOT / "tests" / guard).is_file(), f"{path}: guard {guard} does not exist"


def test_old_module_paths_still_resolve_for_saved_checkpoints():
    """A checkpoint context names e.g. trainer.nemo_patches.JaQwen2Model: the old path must
    give the very object the new one does."""
    import importlib

    import pytest

    pytest.importorskip("nemo.collections.llm", reason="needs NeMo (the train extra)")
    import trainer  # noqa: F401  (installs the finder)

    old = importlib.import_module("trainer.nemo_patches")
    from trainer.megatron.layers import sdpa_layer_spec
    from trainer.megatron.model import JaQwen2Model

    assert old.JaQwen2Model is JaQwen2Model and old.sdpa_layer_spec is sdpa_layer_spec
    assert importlib.import_module("trainer.layers").sdpa_layer_spec is sdpa_layer_spec
    assert importlib.import_module("trainer.fast_lora").LeanLoRA.__module__ == "trainer.megatron.fast_lora"
    with pytest.raises(AttributeError, match="moved to"):
        old.no_such_name  # noqa: B018
