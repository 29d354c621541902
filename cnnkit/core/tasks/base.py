"""The Task: how one kind of model plugs into the engine (data, loss, evaluation, prediction).

Tasks are registered by name (``register_tasks``); core owns the generic ones in
:mod:`cnnkit.core.tasks` (classify, detect, embed, stylize) and a model picks one with
``ModelSpec.task``. A family with its own training logic subclasses one and names it in
``ModelSpec.task_class``. The engine owns everything else.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import LossSpec, ModelSpec, losses, models, resolve, tasks
from cnnkit.core.data import open_dataset
from cnnkit.core.data.pixels import IMAGENET, Norm
from cnnkit.core.weights.checkpoint import Loaded, load_state_dict, load_weights_into


class MappedDataset(Dataset):
    """``fn(sample)`` applied to each sample of ``base`` (keeps ``classes``).

    When ``fn`` has an albumentations ``pipeline``, it is reseeded from (seed, epoch, index)
    before each sample, so augmentation is a pure function of those: runs are reproducible
    and ``--resume`` continues exactly, whatever the number of workers or processes.
    """

    def __init__(self, base: Any, fn: Any, seed: int = 0) -> None:
        self.base, self.fn = base, fn
        self.classes = getattr(base, "classes", None)
        # (seed, epoch) in shared memory, so persistent loader workers see the engine's updates
        self._clock = torch.tensor([seed, 0], dtype=torch.int64).share_memory_()

    @property
    def seed(self) -> int:
        return int(self._clock[0])

    @seed.setter
    def seed(self, value: int) -> None:
        self._clock[0] = value

    @property
    def epoch(self) -> int:
        return int(self._clock[1])

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._clock[1] = value

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        pipeline = getattr(self.fn, "pipeline", None)
        if pipeline is not None:
            pipeline.set_random_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**32)
        return self.fn(self.base[index])


def _worker_init(init: Callable[[int], None] | None, worker_id: int) -> None:
    """A loader worker leaves SIGINT and SIGTERM sent to the whole process group (Ctrl-C, ``timeout``,
    Slurm, systemd) to the main process, which stops at a step and shuts the workers down; a
    SIGTERM from the main process itself (multiprocessing's ``terminate`` at exit) still ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # Linux and most Unixes (not macOS): the sender is known
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_parents_sigterm, args=(os.getppid(),), daemon=True).start()
    if init is not None:
        init(worker_id)


def _exit_on_parents_sigterm(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def default_workers() -> int:
    """Loader processes when ``--workers`` is not given: the CPUs this process may use (shared
    between the processes of a ``torchrun`` launch), less one for the training loop, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) - 1))


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors (nested in tuples, lists and dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


class Task:
    """Base task. Subclasses set ``data_tasks`` and implement the methods marked below.

    A task's settings (``--name value`` after the model on ``cnnkit train``) are its own
    ``options``, the model's architecture ``options`` (passed to its builder) and the chosen
    loss's ``options``; ``--loss NAME`` picks any registered loss made for this task.
    """

    channels_last_inference = True  # CPU inference in channels-last (faster for convolutions: bench/infer_cpu.py)

    data_tasks: tuple[str, ...] = ()  # which kinds of --data fit ("classify", "detect", "embed")
    default_data: str = ""  # used when --data is not given
    key_metric: str = "loss"  # what best.pt is chosen by
    key_mode: str = "max"  # "max" or "min"
    options: dict[str, Any] = {}  # the task's own settings and their defaults
    check_classes: bool = True  # data must have the checkpoint's classes (not for unseen identities)
    normalize: bool = True  # images reach the model ImageNet-normalised (recorded in exported files)
    batch_export: bool = True  # the exported graph takes a batch (else one image at a time)
    export_nms: bool = False  # export_module can put NMS inside the graph (`cnnkit export --nms`)
    noun: str = "model"  # what one-line errors call a model of this task ("a detector")
    run_with: str = "`cnnkit eval {source}`"  # the command a user runs such a model with, named when given to another

    def __init__(self, spec: ModelSpec, config: TrainConfig, classes: list[str] | None = None,
                 state: dict[str, Any] | None = None) -> None:
        self.spec, self.config = spec, config
        self.classes = classes
        self.state: dict[str, Any] = dict(state or {})  # saved in checkpoints (anchors, threshold, ...)
        self.loss_spec = self._loss_spec(str(config.options.get("loss") or self.default_loss()))
        self.options = {**(self.loss_spec.options if self.loss_spec else {}), **type(self).options,
                        **spec.options, "loss": self.loss_spec.name if self.loss_spec else ""}
        unknown = set(config.options) - set(self.options)
        if unknown:
            known = ", ".join(f"--{k.replace('_', '-')}" for k in self.options) or "none"
            raise CnnkitError(f"{spec.name}: unknown option(s) "
                              f"{', '.join('--' + k.replace('_', '-') for k in sorted(unknown))} "
                              f"(this model takes: {known})")
        self._criterion: Any = None

    def default_loss(self) -> str:
        """The loss this model trains with unless ``--loss`` says otherwise."""
        return self.spec.loss

    def _loss_spec(self, name: str) -> LossSpec | None:
        if not name:
            return None
        fits = sorted(n for n, s in losses.items() if self.spec.task in s.tasks)
        if name not in losses:
            raise CnnkitError(f"--loss {name}: no such loss ({self.spec.name} takes: {', '.join(fits) or 'none'})")
        found = losses.get(name)
        if self.spec.task not in found.tasks:
            raise CnnkitError(f"--loss {name} is made for {'/'.join(found.tasks)} models and {self.spec.name} "
                              f"is a {self.spec.task} model (its losses: {', '.join(fits) or 'none'})")
        return found

    def criterion(self, model: nn.Module) -> Any:
        """The chosen loss, built once by its factory: ``build(model, task)``."""
        if self._criterion is None:
            if self.loss_spec is None:
                raise CnnkitError(f"{self.spec.name} names no loss: pass --loss NAME (see `cnnkit plugins`)")
            self._criterion = resolve(self.loss_spec.build)(model, self)
        return self._criterion

    def option(self, name: str) -> Any:
        """A family option: the user's value or the default in ``options``."""
        return self.config.options.get(name, self.options[name])

    # ---------------------------------------------------------------- data
    @property
    def data_spec(self) -> str:
        return self.config.data or self.spec.default_data or self.default_data

    def raw_dataset(self, split: str) -> Any:
        """The dataset split as the adapter yields it, classes checked against the model's
        (a checkpoint's or published weights')."""
        ds = open_dataset(self.data_spec, split, self.data_tasks, val=self.config.val,
                          val_fraction=self.config.val_fraction, seed=self.config.seed)
        found = list(getattr(ds, "classes", []) or [])
        if self.classes is None:
            self.classes = found
        elif self.check_classes and found and found != list(self.classes):
            raise CnnkitError(f"--data {self.data_spec}: its classes {found[:5]} do not match the "
                              f"model's {list(self.classes)[:5]}")
        return ds

    def dataset(self, split: str) -> Dataset:
        """The split ready for the loader (transforms applied). Override for augmentation."""
        raise NotImplementedError

    def collate(self, batch: list[Any]) -> Any:
        return torch.utils.data.default_collate(batch)

    def batch_sampler(self, dataset: Dataset) -> Sampler | None:
        """A training batch sampler (e.g. P identities x K images); None: shuffled batches."""
        return None

    @property
    def workers(self) -> int:
        """``--workers``, or :func:`default_workers` when it is not set (-1)."""
        return self.config.workers if self.config.workers >= 0 else default_workers()

    def loader(self, dataset: Dataset, train: bool, **kwargs: Any) -> DataLoader:
        """A loader over ``dataset``: shuffled batches when training, or ``batch_sampler=`` if given.
        Workers stay up between epochs, prefetch and leave stop signals to the main process;
        batches are pinned for CUDA. The
        loader draws its workers' seed from its own generator (unless given one), so neither the
        global RNG nor a resumed run depends on when the (persistent) workers were started."""
        if kwargs.get("batch_sampler") is None:
            kwargs = {"batch_size": self.config.batch_size, "shuffle": train, **kwargs}
        kwargs.setdefault("generator", torch.Generator().manual_seed(self.config.seed))
        workers = self.workers
        if workers:
            kwargs = {"persistent_workers": True, "prefetch_factor": 4, **kwargs,
                      "worker_init_fn": functools.partial(_worker_init, kwargs.get("worker_init_fn"))}
        cuda = torch.cuda.is_available() and not str(self.config.device).startswith(("cpu", "mps"))
        kwargs.setdefault("collate_fn", self.collate)
        return DataLoader(dataset, num_workers=workers, pin_memory=cuda, **kwargs)

    @property
    def fixed_input_size(self) -> bool:
        """Whether every training batch has the same shape (then cuDNN autotunes once)."""
        return True

    @staticmethod
    def batch_len(batch: Any) -> int:
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        return len(first)

    # ---------------------------------------------------------------- model
    def arch_options(self) -> dict[str, Any]:
        """The model's architecture options as chosen (``None``: the builder's default)."""
        return {k: self.option(k) for k in self.spec.options if self.option(k) is not None}

    def default_norm(self) -> Norm:
        """The input transform of a model trained from scratch by this task (ImageNet's)."""
        return IMAGENET

    def input_norm(self) -> Norm:
        """``(mean, std)`` of the inputs: the config's (from the weights it started from, kept in
        the checkpoint), else the task's own."""
        cfg = self.config
        if cfg.mean is None:
            return self.default_norm()
        return tuple(cfg.mean), tuple(cfg.std or (1.0, 1.0, 1.0))

    def build_model(self) -> nn.Module:
        return self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes, **self.arch_options())

    def load_weights(self, model: nn.Module, path: str) -> Loaded:
        """``--weights PATH``: load a state dict or a cnnkit checkpoint (a head for other classes is
        re-initialised; see :func:`load_weights_into`). Families with other weight formats override this."""
        return load_weights_into(model, load_state_dict(path), self.spec.name, path, strict=False,
                                 allow_partial=self.config.allow_partial)

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; ``"loss"`` is the total that is back-propagated.
        By default the criterion takes ``(model(inputs), targets)`` of an ``(inputs, targets)`` batch."""
        inputs, targets = batch
        return self.criterion(model)(model(inputs), targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
        """Validation metrics (must include ``key_metric``)."""
        raise NotImplementedError

    def finish(self, model: nn.Module, train: Dataset, val_loader: DataLoader, device: torch.device) -> bool:
        """After the last epoch (R-CNN's SVMs, ...). Return True when ``state`` or the model changed."""
        return False

    def log_artifacts(self, model: nn.Module, val: Dataset, tracker: Any, device: torch.device) -> None:
        """Family artifacts for MLflow (sample predictions, PR/ROC curves, ...)."""

    def log_evaluation(self, tracker: Any, step: int = 0) -> None:
        """Figures of the last :meth:`evaluate` for ``cnnkit eval``'s run (none by default)."""

    def predict(self, model: nn.Module, images: Iterable[Any], device: torch.device, **kwargs: Any) -> list[Any]:
        """Predictions for RGB uint8 images (detection: boxes in original pixel coordinates)."""
        raise CnnkitError(f"{self.spec.name} does not predict images")

    def result(self, image: str, pixels: Any, prediction: Any, **kwargs: Any) -> Any:
        """One image's prediction as the object the Python API returns (a :mod:`cnnkit.core.tasks.results`
        class); its ``to_json()`` is what the command line prints for the image."""
        raise CnnkitError(f"{self.spec.name} does not predict images")

    # ---------------------------------------------------------------- export
    def export_module(self, model: nn.Module, nms: dict[str, float] | None = None) -> nn.Module:
        """The inference graph ``cnnkit export`` writes: a module of one image batch whose output
        the task's prediction reads (default: the model itself). ``nms`` (``conf``, ``iou``):
        a detector's graph with NMS inside, for the tasks that offer it (``export_nms``)."""
        return model

    def inference(self, model: nn.Module) -> nn.Module:
        """What prediction calls: the export graph of a torch model; an exported file already is one."""
        return model if getattr(model, "exported", False) else self.export_module(model)

    def export_axes(self) -> dict[int, str]:
        """Input axes besides the batch that stay free in an exported graph (a stylizer's H and W)."""
        return {}

    def export_attrs(self, model: nn.Module) -> dict[str, Any]:
        """Model attributes prediction reads, kept in an exported file's metadata."""
        return {}

    def kept_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors of the state dict that prediction reads outside the graph (kept in the metadata)."""
        return {}

    # ---------------------------------------------------------------- explanation (cnnkit explain)
    explain_refused: dict[str, str] = {}  # method -> why this family refuses it (its sanity check failed)
    explain_kind = "attribution"  # how cnnkit explain shows it: "attribution" maps, image "pairs", "style" layers

    def explain_input(self, image: Any) -> Any:
        """An RGB uint8 image as the model takes it and the picture its maps are drawn on
        (:class:`cnnkit.core.tasks.explaining.Prepared`)."""
        raise CnnkitError(f"{self.spec.name}: `cnnkit explain` does not know how {self.spec.task} models see images")

    def explain_targets(self, model: nn.Module, x: torch.Tensor, options: Any) -> list[Any]:
        """The decisions to explain for one prepared image ``x`` (:class:`~cnnkit.core.tasks.explaining.Target`s)."""
        raise CnnkitError(f"{self.spec.name}: `cnnkit explain` has no target for {self.spec.task} models")

    def explain_layer(self, model: nn.Module, x: torch.Tensor) -> str:
        """The layer maps are computed at unless ``--layer`` says otherwise: the last feature map
        before the network pools."""
        from cnnkit.core.tasks.explaining import last_feature_layer

        return last_feature_layer(model, x)


def make_task(spec: ModelSpec, config: TrainConfig, classes: list[str] | None = None,
              state: dict[str, Any] | None = None) -> Task:
    """The task that trains ``spec``: its ``task_class`` override, else the task registered as ``spec.task``."""
    return task_class(spec)(spec, config, classes=classes, state=state)


def task_class(spec: ModelSpec) -> type[Task]:
    """``spec``'s task class (not built): its ``task_class`` override, else its task's."""
    if spec.task_class is not None:
        return resolve(spec.task_class)
    if spec.task in tasks:
        return resolve(tasks.get(spec.task).build)
    raise CnnkitError(f"model '{spec.name}' names the unknown task '{spec.task}' "
                      f"(known: {', '.join(sorted(tasks.names()))})")


def refuse_other_task(source: str | Path, spec: ModelSpec, expect: str) -> None:
    """One line when ``source`` (a model of ``spec``) is not of the task ``expect`` that the command
    runs: what it is and the command that runs it (`cnnkit detect` given a classifier)."""
    if not expect or spec.task == expect:
        return
    own = task_class(spec)
    wanted = resolve(tasks.get(expect).build).noun if expect in tasks else f"{expect} model"
    what = spec.name if str(source) == spec.name else f"{source}: {spec.name}"
    raise CnnkitError(f"{what} is {_a(own.noun)} ({spec.task} task), not {_a(wanted)}; "
                      f"run it with {own.run_with.format(source=source)}")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def from_checkpoint(ck: dict[str, Any], source: str | Path, data: str = "", expect: str = "") -> tuple[Task, nn.Module]:
    """The task and the model (eval mode) a checkpoint written by ``cnnkit train`` describes;
    ``data`` overrides the data it was trained on (its val split, else all of it); ``expect``: the
    task the caller runs (a model of another is refused, see :func:`refuse_other_task`)."""
    if ck["model"] not in models:
        raise CnnkitError(f"{source}: made by model '{ck['model']}', which no loaded plugin provides")
    spec = models.get(ck["model"])
    refuse_other_task(source, spec, expect)
    config = TrainConfig.from_dict(ck["config"])
    if data:
        config.data, config.val, config.val_fraction = data, data, 0.0
    task = make_task(spec, config, classes=ck.get("classes"), state=ck.get("task_state"))
    model = task.build_model()
    load_weights_into(model, ck["model_state"], spec.name, source)
    return task, model.eval()
