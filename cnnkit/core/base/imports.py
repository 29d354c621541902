"""torchvision without ``torch._dynamo``.

Importing any part of torchvision runs its package ``__init__``, which imports every subpackage;
``torchvision.ops.roi_align`` imports ``torch._dynamo.utils.is_compile_supported`` at module level,
and that loads torch's compiler: about 2 CPU seconds here, more than torchvision and cnnkit
together, for a function roi_align calls only when its compiled kernels are missing.

:func:`install` puts a finder on ``sys.meta_path`` that runs torchvision's own import with a
stand-in ``torch._dynamo.utils`` whose ``is_compile_supported`` imports the real one on its first
call, then takes the stand-in away: the same torchvision, and ``torch._dynamo`` (``torch.compile``)
loads as usual whenever something asks for it. Nothing changes when ``torch._dynamo`` is already
loaded or torchvision already imported."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

STAND_INS = ("torch._dynamo", "torch._dynamo.utils")


def _is_compile_supported(device_type: Any) -> Any:
    """torch's own, imported on the first call."""
    return importlib.import_module("torch._dynamo.utils").is_compile_supported(device_type)


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        import torch

        if any(name in sys.modules for name in STAND_INS):
            return self.loader.exec_module(module)
        package = types.ModuleType(STAND_INS[0])
        package.__path__ = []
        utils = types.ModuleType(STAND_INS[1])
        utils.is_compile_supported = _is_compile_supported  # type: ignore[attr-defined]
        package.utils = utils  # type: ignore[attr-defined]
        sys.modules.update(zip(STAND_INS, (package, utils)))
        try:
            self.loader.exec_module(module)
        finally:
            for name in STAND_INS:
                sys.modules.pop(name, None)
            if torch.__dict__.get("_dynamo") is package:
                del torch._dynamo


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Import torchvision light from now on (see the module's docstring); cheap, idempotent."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
