"""The resolved training configuration: defaults < model recipe < config file < flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnkit.core.base.errors import CnnkitError


@dataclass
class TrainConfig:
    """Everything a training run needs; logged as MLflow params and stored in checkpoints."""

    model: str = ""
    recipe: str = "default"  # which of the model's recipes the values start from (--recipe paper)
    data: str = ""
    val: str = ""  # validation data from another source (any layout)
    val_fraction: float = 0.0  # or this share of the training images, cut by seed
    epochs: int = 10
    batch_size: int = 32
    img_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | nesterov | adam | adamw | adagrad | rmsprop | rmsprop-tf
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"  # cosine | step | multistep | plateau | poly | none
    step_size: int = 0  # step schedule: epochs between decays (0: a third of the run)
    milestones: list[int] = field(default_factory=list)  # multistep schedule: the epochs after which lr x gamma
    gamma: float = 0.1  # the factor of step, multistep and plateau
    power: float = 1.0  # poly schedule: lr x (1 - epoch / epochs) ** power (Darknet's policy=poly)
    grad_clip: float = 0.0
    burn_in: int = 0  # Darknet's warm-up: lr * (step / burn_in)^4 over the first burn_in steps
    label_smoothing: float = 0.0
    device: str = "auto"
    amp: bool | None = None  # None: bf16 autocast on CUDA devices that support bf16, off elsewhere
    channels_last: bool | None = None  # None: on for CUDA, off elsewhere
    compile: bool = False  # run the model under torch.compile
    workers: int = -1  # data loader processes; -1: from the CPU count (see task.default_workers)
    seed: int = 0
    out: str = "runs/train"
    save_period: int = 0  # also keep weights/epochN.pt every N epochs (0: only last/best)
    resume: str = ""
    weights: str = ""  # a state dict file or a registered weights name (`cnnkit weights list`)
    pretrained: bool = False  # start from the model's (or its backbone's) published weights
    allow_partial: bool = False  # --weights/--pretrained may leave tensors the file lacks as built
    mean: list[float] | None = None  # the input transform (pixels in [0, 1]); None: the task's own,
    std: list[float] | None = None  # set from the weights when they come from the registry
    experiment: str = "cnnkit"
    tracking_uri: str = ""
    track: bool = True
    register: str = ""  # also add the trained model to the MLflow Model Registry under this name
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
    except UnicodeDecodeError as exc:
        raise CnnkitError(f"{path}: unreadable config (not UTF-8 text: byte {exc.start})") from None
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise CnnkitError(f"{path}: unreadable config ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CnnkitError(f"{path}: a config file must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


MAX_IMG_SIZE = 4096  # the largest input side any command takes (an image of 4096^2 is 200 MB as floats)
# (check, what it must be) per numeric field; every layer's value goes through these
LIMITS: dict[str, tuple[Any, str]] = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "img_size": (lambda v: 8 <= v <= MAX_IMG_SIZE, f"at least 8 and at most {MAX_IMG_SIZE}"),
    "lr": (lambda v: v >= 0 and math.isfinite(v), "a finite number, 0 or more"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "step_size": (lambda v: v >= 0, "0 or more"),
    "milestones": (lambda v: isinstance(v, list) and all(type(e) is int and e >= 1 for e in v) and v == sorted(set(v)),
                   "a rising list of whole epochs, each at least 1 (e.g. [30, 60])"),
    "gamma": (lambda v: v > 0, "a positive number"),
    "power": (lambda v: v > 0, "a positive number"),
    "grad_clip": (lambda v: v >= 0, "0 or more"),
    "burn_in": (lambda v: v >= 0, "0 or more"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "workers": (lambda v: v >= -1, "0 or more (-1: from the CPU count)"),
    "save_period": (lambda v: v >= 0, "0 or more"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
}


def check_value(key: str, value: Any, where: str = "") -> Any:
    """``value`` within the limit of ``key`` (:data:`LIMITS`), or one line naming it and ``where``
    it came from; commands outside training (``detect --img-size``, ``stylize --lr``) use it too."""
    check = LIMITS.get(key)
    if check is not None and not check[0](value):
        raise CnnkitError(f"{key}: {value!r}{where} must be {check[1]}")
    return value


def _type_ok(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def check_model_name(name: str, where: str = "") -> str:
    """``name`` as MLflow's model registry takes it (MLflow's own check), so ``--register`` fails before training."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise CnnkitError(f"register: {name!r}{where} is not a name MLflow's model registry takes "
                          f"({exc.message.splitlines()[0]})") from None
    return name


def validate_config(config: TrainConfig, sources: dict[str, str] | None = None) -> TrainConfig:
    """Check every field's type and range; the error names the key and the layer it came from."""
    sources = sources or {}
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), kinds.get(str(f.type))
        where = f" (from {sources[f.name]})" if f.name in sources else ""
        if kind is not None and not _type_ok(value, kind):
            raise CnnkitError(f"{f.name}: {value!r}{where} is not a{'n' if kind is int else ''} {kind.__name__}")
        check_value(f.name, value, where)
    if config.register:  # before any training: MLflow would refuse it only at the end
        check_model_name(config.register, f" (from {sources['register']})" if "register" in sources else "")
    return config


def resolve_config(model: str, recipe: dict[str, Any], file_values: dict[str, Any],
                   flags: dict[str, Any], checkpoint: dict[str, Any] | None = None,
                   file_name: str = "") -> TrainConfig:
    """Merge the layers (recipe < checkpoint < config file < flags) and validate the result once;
    ``None`` flags mean "not given". ``options`` dicts are merged too."""
    merged: dict[str, Any] = {"model": model}
    options: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = (("the model's recipe", recipe), ("the resumed checkpoint", checkpoint or {}),
              (f"config file {file_name}" if file_name else "the config file", file_values),
              ("the command line", {k: v for k, v in flags.items() if v is not None}))
    for name, layer in layers:
        layer = dict(layer)
        given = layer.pop("options", None) or {}
        if not isinstance(given, dict):
            raise CnnkitError(f"options: {given!r} (from {name}) must be a mapping of option: value")
        options.update(given)
        merged.update(layer)
        sources.update(dict.fromkeys(layer, name))
    merged["model"], merged["options"] = model, options
    return validate_config(TrainConfig.from_dict(merged), sources)
