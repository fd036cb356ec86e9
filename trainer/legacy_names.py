"""Old module paths of the ``trainer`` package, still importable for saved checkpoints.

A NeMo checkpoint's ``context/io.json`` names the classes and functions it was built
from by module path (``trainer.nemo_patches.JaQwen2Model``, ``trainer.layers.sdpa_layer_spec``,
``trainer.fast_lora.LeanLoRA``...). Checkpoints saved before the package was split into
``run/``, ``megatron/``, ``convert/`` and ``cli/`` must still load and export, so each
old path is a module that forwards attribute lookups to where the name lives now. The
finder is installed by ``trainer/__init__.py`` and costs nothing until an old path is
imported; nothing heavy is imported before then.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

_RUN = ("config", "presets", "recipe", "launch", "data", "callbacks", "checkpoints")
_MEGATRON = ("layers", "fused_loss", "fast_lora", "grad_norm", "cuda_graphs", "cpu_shims")

# old module -> the modules its names live in now (searched in order)
MOVED: dict[str, tuple[str, ...]] = {
    **{f"trainer.{m}": (f"trainer.run.{m}",) for m in _RUN},
    **{f"trainer.{m}": (f"trainer.megatron.{m}",) for m in _MEGATRON},
    "trainer.nemo_patches": ("trainer.megatron.nemo_patches", "trainer.megatron.model", "trainer.megatron.layers",
                             "trainer.convert.importer"),
    "trainer.importer": ("trainer.convert.importer", "trainer.convert.parity"),
    "trainer.export": ("trainer.convert.export",),
    "trainer.export_nemo": ("trainer.convert.export_nemo",),
    "trainer.export_mapping": ("trainer.convert.export_mapping",),
    "trainer.export_cli": ("trainer.cli.export",),
    "trainer.evaluate.cli": ("trainer.cli.evaluate",),
}


class _Forwarder(importlib.abc.Loader):
    def __init__(self, targets: tuple[str, ...]):
        self.targets = targets

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        targets = self.targets

        def __getattr__(name: str):
            for target in targets:
                new = importlib.import_module(target)
                if hasattr(new, name):
                    return getattr(new, name)
            raise AttributeError(f"module {module.__name__!r} (moved to {', '.join(targets)}) has no {name!r}")

        module.__getattr__ = __getattr__
        module.__doc__ = f"Moved: see {', '.join(targets)} (kept for saved checkpoints)."


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        targets = MOVED.get(fullname)
        if targets is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Forwarder(targets))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
