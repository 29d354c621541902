"""Stand-ins for published weights files: the publisher's own model (torchvision, timm) with random
weights and randomised BN statistics, saved in the key layout of the file it publishes, placed in
torch's cache under the registry's file name. No network: the registry entry's hash is made the
stand-in file's (``monkeypatch``), so the cache check passes for it and for nothing else."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnkit.core.base import plugins, registry


def place(monkeypatch: Any, cache: Path, name: str, state: dict[str, Any]) -> Path:
    """Save ``state`` in ``cache`` as entry ``name``'s file (safetensors for a safetensors entry) and
    make its SHA-256 the one the registry expects for that file name."""
    plugins.load_plugins()
    entry = registry.weights.get(name)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / entry.file
    if entry.format == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return pin(monkeypatch, path, name)


def pin(monkeypatch: Any, path: Path, name: str) -> Path:
    """Make ``path``'s SHA-256 the one the registry expects for entry ``name``'s file (and every entry
    sharing that file)."""
    entry = registry.weights.get(name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for other_name, other in registry.weights.items():
        if other.file == entry.file:
            known = {"hash_prefix": digest[:8]} if other.hash_prefix else {"sha256": digest}
            monkeypatch.setitem(registry.weights._items, other_name, replace(other, size=None, **known))
    return path


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine parameters (a checkpoint's, not a fresh init's), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def torchvision_weights(entry: Any) -> Any:
    """torchvision's own weights enum member whose URL is ``entry``'s file (its builder and transforms)."""
    import torchvision

    for arch in torchvision.models.list_models():
        for w in torchvision.models.get_model_weights(arch):
            if w.url.rsplit("/", 1)[1] == entry.file:
                return arch, w
    raise LookupError(entry.file)


def old_layout(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict as torch < 0.4.1 saved it: no BN counters and no ``_metadata`` versions (the
    layout of torchvision's 2017 ImageNet files)."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def densenet_layout(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet files: ``norm.1``/``conv.2`` names (pre-0.4 modules)."""
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
            for k, v in old_layout(state).items()}


def rcnn_layout(state: Any) -> Any:
    """torchvision's published Faster R-CNN files: the pre-0.13 FPN (``inner_blocks.N.weight``,
    ``layer_blocks.N.weight``) and RPN (``head.conv.weight``) names, saved with those modules at
    ``_metadata`` version 1, frozen BN without counters."""
    old = OrderedDict()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"(fpn\.(?:inner|layer)_blocks\.\d+)\.0\.(weight|bias)$", r"\1.\2", k)
        k = re.sub(r"^rpn\.head\.conv\.0\.0\.(weight|bias)$", r"rpn.head.conv.\1", k)
        old[k] = v
    old._metadata = OrderedDict((k, {**v, "version": 1}) for k, v in state._metadata.items())
    assert "backbone.fpn.inner_blocks.0.weight" in old and "rpn.head.conv.weight" in old
    return old
