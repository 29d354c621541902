"""The resolved training configuration: defaults < model recipe < config file < flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnkit.core.errors import CnnkitError


@dataclass
class TrainConfig:
    """Everything a training run needs; logged as MLflow params and stored in checkpoints."""

    model: str = ""
    data: str = ""
    val: str = ""  # validation data from another source (any layout)
    val_fraction: float = 0.0  # or this share of the training images, cut by seed
    epochs: int = 10
    batch_size: int = 32
    img_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adam | adamw | rmsprop
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"  # cosine | step | plateau | none
    step_size: int = 0  # step schedule: epochs between decays (0: a third of the run)
    gamma: float = 0.1
    grad_clip: float = 0.0
    label_smoothing: float = 0.0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    workers: int = 0
    seed: int = 0
    out: str = "runs/train"
    save_period: int = 0  # also keep weights/epochN.pt every N epochs (0: only last/best)
    resume: str = ""
    weights: str = ""
    experiment: str = "cnnkit"
    tracking_uri: str = ""
    track: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # family-specific (see Task.options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CnnkitError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return cls(**values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of TrainConfig fields (and ``options``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such config file") from None
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise CnnkitError(f"{path}: unreadable config ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CnnkitError(f"{path}: a config file must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_config(model: str, recipe: dict[str, Any], file_values: dict[str, Any],
                   flags: dict[str, Any]) -> TrainConfig:
    """Merge the layers; ``None`` flags mean "not given". ``options`` dicts are merged too."""
    merged: dict[str, Any] = {"model": model}
    options: dict[str, Any] = {}
    for layer in (recipe, file_values, {k: v for k, v in flags.items() if v is not None}):
        layer = dict(layer)
        options.update(layer.pop("options", None) or {})
        merged.update(layer)
    merged["model"], merged["options"] = model, options
    return TrainConfig.from_dict(merged)
