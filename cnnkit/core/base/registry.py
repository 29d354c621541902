"""Registries of models, losses and datasets, filled by the plugins' hooks.

Everything here is cheap to import: builders are referenced as ``"module:attr"`` strings (or
callables) and imported only when a model, loss or dataset is actually built.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from cnnkit.core.base.errors import CnnkitError

Ref = str | Callable[..., Any]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the input transform most published weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
RAW_MEAN, RAW_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # pixels in [0, 1] as they are
HALF = (0.5, 0.5, 0.5)  # mean = std = 0.5: inputs in [-1, 1] (Google's Inception weights)


def resolve(ref: Ref) -> Callable[..., Any]:
    """Turn a ``"package.module:attr"`` reference into the object it names."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:  # a plugin's reference that does not resolve
        raise CnnkitError(f"cannot load '{ref}' ({type(exc).__name__}: {exc})") from None
    return obj


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what the paper says about it.

    ``name``, ``task`` (a registered task: ``classify``, ``detect``, ``embed``, ``stylize`` or one a
    plugin adds) and ``build(num_classes=..., **kwargs) -> nn.Module`` are all a model needs.
    ``task_class`` overrides the task's class for a family with its own training logic; ``loss``
    names the registered loss it trains with by default (``--loss NAME`` picks another);
    ``options`` are architecture options with their defaults, passed to ``build`` and settable
    as ``--name value`` on ``cnnkit train``.

    ``recipe`` is the training recipe ``cnnkit train`` starts from (``TrainConfig`` values and an
    ``options`` dict; a config file and flags override it); ``recipes`` names others, chosen with
    ``--recipe NAME`` (``paper``: the paper's optimiser, schedule, batch, input size and
    augmentation). A recipe's ``about`` says where its values come from (shown by ``cnnkit models
    --recipe MODEL``, never part of the configuration). ``defaults`` is ``recipe``'s old name, still read.
    """

    name: str
    task: str
    build: Ref
    task_class: Ref | None = None
    loss: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    aliases: tuple[str, ...] = ()
    paper: str = ""
    paper_params: int | None = None
    paper_macs: float | None = None  # multiply-adds of one forward pass at img_size
    img_size: int = 224  # the paper's input size
    min_img_size: int = 32
    in_channels: int = 3
    num_classes: int = 1000  # the paper's number of classes
    default_data: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)  # the default training recipe
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # named others: --recipe NAME
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""
    defaults: InitVar[dict[str, Any] | None] = None  # the old name of ``recipe`` (plugins written before it)

    def __post_init__(self, defaults: dict[str, Any] | None) -> None:
        if defaults:
            warnings.warn(f"ModelSpec({self.name!r}, defaults=...): the keyword is now recipe=", DeprecationWarning,
                          stacklevel=3)
            object.__setattr__(self, "recipe", {**defaults, **self.recipe})

    def recipe_names(self) -> list[str]:
        """``default`` (the model's recipe) and the names of its other recipes."""
        return ["default", *(name for name in self.recipes if name != "default")]

    def recipe_for(self, name: str = "default") -> dict[str, Any]:
        """The configuration values of recipe ``name`` (``about`` left out), or one line naming the recipes."""
        if name != "default" and name not in self.recipes:
            raise CnnkitError(f"--recipe {name}: {self.name} has no such recipe (its recipes: "
                              f"{', '.join(self.recipe_names())})")
        values = self.recipe if name == "default" else self.recipes[name]
        return {k: v for k, v in values.items() if k != "about"}

    def recipe_about(self, name: str = "default") -> str:
        """Where recipe ``name``'s values come from."""
        return str((self.recipe if name == "default" else self.recipes.get(name, {})).get("about", ""))

    def for_file(self, path: str) -> "ModelSpec":
        """This spec built from a definition file (e.g. a Darknet .cfg): ``build(cfg=path)``."""
        return replace(self, name=path, aliases=(), build_kwargs={**self.build_kwargs, "cfg": path})

    def create(self, **kwargs: Any) -> Any:
        """Build the network (``weights=None``: no download ever happens here)."""
        return resolve(self.build)(**{**self.build_kwargs, **kwargs})


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: the :class:`cnnkit.core.tasks.base.Task` subclass that trains, evaluates and
    runs every model whose ``ModelSpec.task`` names it."""

    name: str
    build: Ref
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class LossSpec:
    """A registered loss. ``build(model, task) -> callable`` is the one factory signature: it
    reads what it needs from the model (anchors, number of classes) and the task
    (``task.option(name)``, ``task.config``). ``tasks`` names the tasks whose batches it fits;
    ``options`` are its own settings with defaults (``--margin 0.2``, ``--mining hard``)."""

    name: str
    build: Ref
    tasks: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset adapter (a layout on disk) or a synthetic set made on the fly.

    ``build(source, split=..., **params)`` returns a dataset of samples; for layouts,
    ``matches(path) -> bool`` recognises the layout without importing anything heavy.
    """

    name: str
    task: str
    build: Ref
    matches: Callable[[Any], bool] | None = None  # None: a synthetic set, named in the spec
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class WeightsSpec:
    """Published weights: ``file`` at its publisher's ``url``, checked by ``sha256`` (or
    torchvision's ``hash_prefix``, the first hex digits of it) before it is used.

    ``model`` is the registered model (or backbone) they fit when built with ``options`` (the
    architecture ``variant`` they were trained for); ``mismatch``, when set, says why they cannot
    load into cnnkit's ``model`` and ``--pretrained`` refuses with it. ``format``: ``torch``,
    ``safetensors`` or ``darknet``; ``convert`` maps the file's state dict to ours (key renames).
    ``size`` is the exact byte count where the publisher states it (None otherwise).
    ``mean``/``std`` are the input transform the weights were trained with (pixels in [0, 1]);
    ``resize``/``crop``/``interpolation`` the publisher's evaluation preprocessing (resize the
    short side, centre crop), as torchvision's ``weights.transforms()`` and timm's data config do.
    """

    name: str
    file: str
    url: str
    model: str = ""
    sha256: str = ""
    hash_prefix: str = ""
    size: int | None = None
    license: str = ""
    variant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    format: str = "torch"
    convert: Ref | None = None
    mismatch: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    plugin: str = ""
    classes: str = ""  # the class list they were trained with (cnnkit.core.weights.classnames: imagenet, coco, coco91)


class Registry:
    """Name -> item with aliases and "did you mean" suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, item: Any, aliases: tuple[str, ...] = ()) -> None:
        if name in self._items or name in self._aliases:
            raise CnnkitError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        for alias in aliases:
            self._aliases[alias] = name

    def remove(self, name: str) -> None:
        """Take ``name`` and its aliases out (a built-in's registration replacing an intruder's)."""
        self._items.pop(name, None)
        for alias in [a for a, target in self._aliases.items() if target == name]:
            del self._aliases[alias]

    def holder(self, name: str) -> str | None:
        """The plugin whose registration holds ``name`` (or an alias of that name), None when free."""
        key = self._aliases.get(name, name)
        return getattr(self._items[key], "plugin", "?") if key in self._items else None

    def get(self, name: str) -> Any:
        key = self._aliases.get(name, name)
        pattern = "*" + Path(name).suffix.lower()
        if key not in self._items and pattern in self._aliases:  # a file a plugin can build from
            if not Path(name).is_file():
                raise CnnkitError(f"{name}: no such file")
            return self._items[self._aliases[pattern]].for_file(name)
        if key not in self._items:
            close = difflib.get_close_matches(name, self.names(with_aliases=True), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = ("see `cnnkit models`" if self.kind == "model"
                     else "known: " + (", ".join(sorted(self._items)) or "none"))
            raise CnnkitError(f"unknown {self.kind} '{name}'{hint} ({known})")
        return self._items[key]

    def __contains__(self, name: str) -> bool:
        if self._aliases.get(name, name) in self._items:
            return True
        return self.is_definition_file(name)

    def is_definition_file(self, name: str) -> bool:
        """A file a plugin builds a model from (e.g. a Darknet .cfg), by its suffix."""
        return "*" + Path(name).suffix.lower() in self._aliases and Path(name).is_file()

    def names(self, with_aliases: bool = False) -> list[str]:
        names = list(self._items)
        return names + list(self._aliases) if with_aliases else names

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.items())

    def clear(self) -> None:
        self._items.clear()
        self._aliases.clear()


models = Registry("model")
tasks = Registry("task")
losses = Registry("loss")
datasets = Registry("dataset")
weights = Registry("weights")
ALL = (models, tasks, losses, datasets, weights)


def is_model_source(source: str | Path) -> bool:
    """A registered model name (where no such file exists) or a definition file a plugin builds."""
    name = str(source)
    return models.is_definition_file(name) or (name in models and not Path(name).exists())
