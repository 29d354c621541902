"""The resolved training configuration: defaults < model recipe < config file < flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from cnnkit.core.base.errors import CnnkitError

MAX_IMG_SIZE = 4096  # the largest input side any command takes (an image of 4096^2 is 200 MB as floats)


def setting(default: Any, help: str, check: Callable[[Any], bool] | None = None, must: str = "",
            flag: str | None = "") -> Any:
    """A training setting, declared once: its default, its help, its limit (``check``, and what a
    value ``must`` be when it fails) and its command-line flag ("": ``--name-with-dashes``; None: set
    from a config file or the Python API only). The field's annotation is its type. ``cnnkit train``'s
    options, the config file's keys, :func:`cnnkit.train`'s keywords and :func:`validate_config` all
    come from these."""
    meta = {"help": help, "check": check, "must": must, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run needs; logged as MLflow params and stored in checkpoints."""

    model: str = setting("", "The registered model.", flag=None)
    recipe: str = setting("default", "Start from this recipe of the model: default (fast, for CPUs) or paper "
                          "(`cnnkit models --recipe MODEL` shows them).")
    data: str = setting("", "Dataset path or synthetic:NAME[?k=v].")
    val: str = setting("", "Validate on this data (any layout) instead of --data's val split.")
    val_fraction: float = setting(0.0, "Validate on this share of the training images (seeded cut).",
                                  lambda v: 0 <= v < 1, "in [0, 1)")
    epochs: int = setting(10, "Epochs to train.", lambda v: v >= 1, "at least 1")
    batch_size: int = setting(32, "Images a training step.", lambda v: v >= 1, "at least 1")
    img_size: int = setting(64, f"Input size, 8 to {MAX_IMG_SIZE}.", lambda v: 8 <= v <= MAX_IMG_SIZE,
                            f"at least 8 and at most {MAX_IMG_SIZE}")
    lr: float = setting(0.01, "Learning rate.", lambda v: v >= 0 and math.isfinite(v), "a finite number, 0 or more")
    optimizer: str = setting("sgd", "sgd, nesterov, adam, adamw, adagrad, rmsprop or rmsprop-tf (epsilon inside "
                             "the root).")
    momentum: float = setting(0.9, "Momentum (SGD, Nesterov, RMSProp).", lambda v: 0 <= v < 1, "in [0, 1)")
    weight_decay: float = setting(5e-4, "L2 weight decay.", lambda v: v >= 0, "0 or more")
    scheduler: str = setting("cosine", "cosine, step, multistep, plateau, poly or none.")
    step_size: int = setting(0, "Step schedule: epochs between decays (0: a third of the run).",
                             lambda v: v >= 0, "0 or more")
    milestones: list[int] = setting([], "Multistep schedule: the epochs after which lr x gamma (a list).",
                                    lambda v: isinstance(v, list) and all(type(e) is int and e >= 1 for e in v)
                                    and v == sorted(set(v)),
                                    "a rising list of whole epochs, each at least 1 (e.g. [30, 60])", flag=None)
    gamma: float = setting(0.1, "The factor of the step, multistep and plateau schedules.", lambda v: v > 0,
                           "a positive number")
    power: float = setting(1.0, "Poly schedule: lr x (1 - epoch / epochs) ** power (Darknet's policy=poly).",
                           lambda v: v > 0, "a positive number")
    grad_clip: float = setting(0.0, "Clip the gradients' norm to this (0: no clipping).", lambda v: v >= 0,
                               "0 or more")
    burn_in: int = setting(0, "Warm-up steps: lr x (step/N)^4 (Darknet's burn_in).", lambda v: v >= 0, "0 or more")
    label_smoothing: float = setting(0.0, "Label smoothing of the classification loss.", lambda v: 0 <= v < 1,
                                     "in [0, 1)")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    amp: bool | None = setting(None, "Mixed precision (bf16, or fp16 with a GradScaler; default: bf16 on CUDA "
                               "that has it).")
    channels_last: bool | None = setting(None, "Channels-last memory format (default: on for CUDA).")
    compile: bool = setting(False, "Run the model under torch.compile.")
    workers: int = setting(-1, "Loader processes (default: from the CPU count).", lambda v: v >= -1,
                           "0 or more (-1: from the CPU count)")
    seed: int = setting(0, "The seed of every random draw.", lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    out: str = setting("runs/train", "Run folder (default runs/MODEL[-N]).")
    save_period: int = setting(0, "Also keep weights/epochN.pt every N epochs.", lambda v: v >= 0, "0 or more")
    resume: str = setting("", "Continue from this checkpoint.")
    weights: str = setting("", "Start from these weights (a state dict file or a name from `cnnkit weights list`).")
    pretrained: bool = setting(False, "Start from the published weights (downloaded on first use).")
    allow_partial: bool = setting(False, "Let --weights/--pretrained leave tensors the file lacks as built, and "
                                  "ignore tensors the model has no place for.")
    mean: list[float] | None = setting(None, "The input transform's mean (pixels in [0, 1]; default the task's, "
                                       "or the published weights').", flag=None)
    std: list[float] | None = setting(None, "The input transform's standard deviation.", flag=None)
    experiment: str = setting("cnnkit", "MLflow experiment name.")
    tracking_uri: str = setting("", "MLflow tracking URI.")
    track: bool = setting(True, "Log the run to MLflow (--no-track: do not).")
    register: str = setting("", "Add the trained model to the MLflow Model Registry as NAME.")
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


# (check, what it must be) per field with a limit; every layer's value goes through these
LIMITS: dict[str, tuple[Any, str]] = {f.name: (f.metadata["check"], f.metadata["must"])
                                      for f in dataclasses.fields(TrainConfig) if f.metadata.get("check")}


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
