"""The one training loop for every family, in named steps: set up the model and weights,
resume, build the loaders, train an epoch, validate, save. MLflow and the progress display
listen to the loop's events as callbacks (:mod:`cnnkit.core.callbacks`)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from cnnkit import __version__
from cnnkit.core import device as devices
from cnnkit.core.callbacks import Callback, Run, console, tracked_run
from cnnkit.core.checkpoint import copy_checkpoint, load_checkpoint, load_weights_into, save_checkpoint
from cnnkit.core.config import TrainConfig
from cnnkit.core.data.splits import split_summary
from cnnkit.core.errors import CnnkitError
from cnnkit.core.plots import line_plot
from cnnkit.core.registry import ModelSpec, models, resolve, tasks
from cnnkit.core.task import Task, to_device


@dataclass
class FitResult:
    """What a finished training run produced."""

    out: Path
    last: Path
    best: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str = ""


def make_task(spec: ModelSpec, config: TrainConfig, classes: list[str] | None = None,
              state: dict[str, Any] | None = None) -> Task:
    """The task that trains ``spec``: its ``task_class`` override, else the task registered as ``spec.task``."""
    if spec.task_class is not None:
        cls = resolve(spec.task_class)
    elif spec.task in tasks:
        cls = resolve(tasks.get(spec.task).build)
    else:
        raise CnnkitError(f"model '{spec.name}' names the unknown task '{spec.task}' "
                          f"(known: {', '.join(sorted(tasks.names()))})")
    return cls(spec, config, classes=classes, state=state)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (the VGG recipe), Adam/AdamW, or RMSProp (Inception-v3)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = config.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "rmsprop":  # Inception-v3: decay 0.9, epsilon 1.0
        return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    raise CnnkitError(f"unknown optimizer '{config.optimizer}' (sgd, adam, adamw, rmsprop)")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, key_mode: str) -> Any:
    """Per-epoch schedule: cosine, step, plateau (on the key metric) or none."""
    name = config.scheduler.lower()
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    if name == "step":
        step = config.step_size or max(config.epochs // 3, 1)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.gamma)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=key_mode, factor=config.gamma, patience=2)
    if name == "none":
        return None
    raise CnnkitError(f"unknown scheduler '{config.scheduler}' (cosine, step, plateau, none)")


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


class Trainer:
    """Runs ``fit`` for one resolved config; each step of the loop is a method."""

    def __init__(self, config: TrainConfig, callbacks: list[Callback] | None = None) -> None:
        self.config = config
        self.spec = models.get(config.model)
        self.resume_ckpt = load_checkpoint(config.resume) if config.resume else None
        if self.resume_ckpt is not None and self.resume_ckpt["model"] != self.spec.name:
            raise CnnkitError(f"{config.resume}: checkpoint was made by model '{self.resume_ckpt['model']}', "
                              f"not '{self.spec.name}'")
        self.task = make_task(self.spec, config,
                              classes=self.resume_ckpt.get("classes") if self.resume_ckpt else None,
                              state=self.resume_ckpt.get("task_state") if self.resume_ckpt else None)
        if config.img_size < self.spec.min_img_size:
            raise CnnkitError(f"{self.spec.name} needs --img-size >= {self.spec.min_img_size} "
                              f"(its architecture shrinks smaller inputs to nothing)")
        self.device = devices.resolve_device(config.device)
        self.dist = devices.setup_distributed(self.device)
        self.out = Path(config.out)
        self.last_path, self.best_path = self.out / "weights" / "last.pt", self.out / "weights" / "best.pt"
        self.extra_callbacks = list(callbacks or [])
        self.start_epoch, self.best, self.history = 0, None, []

    # ---------------------------------------------------------------- set-up steps
    def build_datasets(self) -> None:
        """The train and val splits (the task learns its classes from them)."""
        self.train_ds, self.val_ds = self.task.dataset("train"), self.task.dataset("val")
        lines, self.data_params = split_summary(self.train_ds, self.val_ds)
        for line in lines if self.dist.is_main else []:
            console.print(line, soft_wrap=True, markup=False, highlight=False)

    def setup_model(self) -> None:
        """Build the model (with ``--weights``), its loss, the optimizer, schedule and precision."""
        cfg, task = self.config, self.task
        self.model = task.build_model().to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.weights and self.resume_ckpt is None:
            loaded = task.load_weights(self.model, cfg.weights)
            console.print(f"weights: {loaded}/{len(self.model.state_dict())} tensors from {cfg.weights}")
        if task.loss_spec is not None:  # a bad loss setting fails now, not after the data is built
            criterion = task.criterion(self.model)
            if isinstance(criterion, nn.Module):
                criterion.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, task.key_mode)
        self.precision = devices.Precision(self.device, cfg.amp)

    def resume(self) -> None:
        """Restore model, optimizer, schedule, scaler, epoch, best metric, history and RNG."""
        ck = self.resume_ckpt
        if ck is None:
            return
        load_weights_into(self.model, ck["model_state"], self.spec.name, self.config.resume)
        self.optimizer.load_state_dict(ck["optimizer_state"])
        if self.scheduler is not None and ck.get("scheduler_state"):
            self.scheduler.load_state_dict(ck["scheduler_state"])
        if ck.get("scaler_state"):
            self.precision.scaler.load_state_dict(ck["scaler_state"])
        self.start_epoch, self.best = int(ck["epoch"]) + 1, ck.get("best_metric")
        _set_rng_state(ck["rng"])
        self.history = list(ck.get("history", []))

    def build_loaders(self) -> None:
        """The loaders (a P x K batch sampler, DDP's sampler or shuffled batches), DDP's model wrapper."""
        cfg, task = self.config, self.task
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        batch_sampler = task.batch_sampler(self.train_ds)
        self.sampler = DistributedSampler(self.train_ds, seed=cfg.seed) if self.dist.enabled else None
        self.generator = torch.Generator()
        if batch_sampler is not None:
            self.train_loader = task.loader(self.train_ds, train=True, batch_sampler=batch_sampler)
        elif self.sampler is not None:
            self.train_loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, sampler=self.sampler,
                                           num_workers=cfg.workers, collate_fn=task.collate)
        else:
            self.train_loader = task.loader(self.train_ds, train=True, generator=self.generator)
        self.val_loader = task.loader(self.val_ds, train=False)
        if len(self.train_loader) == 0:
            raise CnnkitError(f"--data {task.data_spec}: the training split is empty")

    # ---------------------------------------------------------------- the loop
    def fit(self) -> FitResult:
        cfg, task = self.config, self.task
        devices.seed_everything(cfg.seed + self.dist.rank)
        self.build_datasets()
        self.setup_model()
        self.resume()
        self.build_loaders()
        run = self.new_run()
        metrics: dict[str, float] = {}
        try:
            with run:
                for epoch in range(self.start_epoch, cfg.epochs):
                    train_stats = self.train_epoch(run, epoch)
                    metrics = self.validate()
                    self.step_schedule(metrics, train_stats)
                    row = {**train_stats, **metrics, "lr": self.optimizer.param_groups[0]["lr"]}
                    self.history.append({"epoch": epoch, **row})
                    if self.dist.is_main:
                        run.log_metrics(row, step=epoch)
                        self.save(epoch, metrics)
                        run.emit("on_epoch_end", f"epoch {epoch + 1}/{cfg.epochs}", row)
                if self.dist.is_main:
                    metrics = self.finish(run) or metrics
                    self.log_artifacts(run)
        finally:
            self.dist.close()
        final = load_checkpoint(self.best_path)["metrics"] if self.dist.is_main and self.best_path.exists() else metrics
        return FitResult(self.out, self.last_path, self.best_path, final, self.history, run.run_id)

    def new_run(self) -> Run:
        """The run's lifecycle: MLflow (rank 0, unless --no-track), progress, and any extra callbacks."""
        cfg, task = self.config, self.task
        run = tracked_run(f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", cfg.to_dict() | self.data_params,
                          {"cnnkit.plugin": self.spec.plugin, "cnnkit.model": self.spec.name,
                           "cnnkit.task": self.spec.task, "cnnkit.key_metric": f"val_{task.key_metric}",
                           "cnnkit.data": task.data_spec},
                          track=cfg.track and self.dist.is_main, uri=cfg.tracking_uri, experiment=cfg.experiment,
                          progress=self.dist.is_main)
        run.callbacks += self.extra_callbacks
        return run

    def train_epoch(self, run: Run, epoch: int) -> dict[str, float]:
        """One pass over the training loader; the mean of each loss term and the throughput."""
        cfg, task, loader = self.config, self.task, self.train_loader
        self.generator.manual_seed(cfg.seed * 1000 + epoch)
        if hasattr(self.train_ds, "epoch"):
            self.train_ds.seed, self.train_ds.epoch = cfg.seed, epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        model, optimizer, precision = self.train_model, self.optimizer, self.precision
        model.train()
        totals: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        run.emit("on_epoch_start", f"epoch {epoch + 1}/{cfg.epochs}", len(loader))
        for step, batch in enumerate(loader):
            batch = to_device(batch, self.device, cfg.channels_last)
            with precision.autocast():
                losses = task.loss(model, batch, epoch * len(loader) + step)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise CnnkitError(f"the loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                                  "try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                precision.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            precision.scaler.step(optimizer)
            precision.scaler.update()
            n = task.batch_len(batch)
            seen += n
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
            run.emit("on_step", {"loss": totals["loss"] / seen,
                                 "img/s": seen / max(time.perf_counter() - start, 1e-9)})
        return {f"train_{k}": v / max(seen, 1) for k, v in totals.items()} | \
            {"train_img_per_s": seen / max(time.perf_counter() - start, 1e-9)}

    def validate(self) -> dict[str, float]:
        """The task's validation metrics (rank 0), prefixed ``val_``."""
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            self.model.eval()
            metrics = {k if k.startswith("val_") else f"val_{k}": v
                       for k, v in self.task.evaluate(self.model, self.val_loader, self.device).items()}
        self.dist.barrier()
        return metrics

    def step_schedule(self, metrics: dict[str, float], train_stats: dict[str, float]) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            key = metrics.get(f"val_{self.task.key_metric}", float("nan"))
            self.scheduler.step(key if not math.isnan(key) else train_stats["train_loss"])
        else:
            self.scheduler.step()

    def save(self, epoch: int, metrics: dict[str, float], force_best: bool = False) -> None:
        """``last.pt`` atomically; ``best.pt`` when the key metric improved; ``epochN.pt`` every --save-period."""
        key = metrics.get(f"val_{self.task.key_metric}", float("nan"))
        improved = force_best or _better(key, self.best, self.task.key_mode)
        self.best = key if improved else self.best
        save_checkpoint(self.last_path, self.payload(epoch, metrics))
        if improved or not self.best_path.exists():
            copy_checkpoint(self.last_path, self.best_path)
        period = self.config.save_period
        if period and (epoch + 1) % period == 0 and not force_best:
            copy_checkpoint(self.last_path, self.last_path.parent / f"epoch{epoch + 1}.pt")

    def finish(self, run: Run) -> dict[str, float] | None:
        """The task's after-training step (R-CNN's SVMs, ...): re-validated and saved when it changed anything."""
        cfg = self.config
        if not self.task.finish(self.model, self.train_ds, self.val_loader, self.device):
            return None
        self.model.eval()
        metrics = {f"val_{k}": v for k, v in self.task.evaluate(self.model, self.val_loader, self.device).items()}
        run.log_metrics(metrics, step=cfg.epochs)
        self.save(cfg.epochs - 1, metrics, force_best=True)
        return metrics

    def log_artifacts(self, run: Run) -> None:
        """Best metric, checkpoints, loss curve and the family's own artifacts."""
        if self.best is not None:
            run.log_metrics({f"best_val_{self.task.key_metric}": self.best}, step=self.config.epochs)
        if not run.run_id:
            return
        run.log_artifact(self.last_path, "weights")
        run.log_artifact(self.best_path, "weights")
        run.log_figure(loss_curve(self.history), "loss_curve.png")
        self.task.log_artifacts(self.model, self.val_ds, run, self.device)

    def payload(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """A checkpoint: plain tensors and primitives only, so ``weights_only=True`` reads it."""
        return {
            "cnnkit_version": __version__,
            "model": self.spec.name,
            "task": self.spec.task,
            "classes": list(self.task.classes or []),
            "config": self.config.to_dict(),
            "task_state": self.task.state,
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler_state": self.precision.scaler.state_dict(),
            "epoch": epoch,
            "best_metric": self.best,
            "key_metric": self.task.key_metric,
            "metrics": metrics,
            "rng": _rng_state(),
            "history": self.history,
        }


def loss_curve(history: list[dict[str, float]]) -> Any:
    """A matplotlib figure of the training losses per epoch."""
    keys = sorted({k for h in history for k in h if k.startswith("train_") and k != "train_img_per_s"})
    series = {k: [h.get(k, float("nan")) for h in history] for k in keys}
    return line_plot([h["epoch"] + 1 for h in history], series, "epoch", "loss", marker="o")


def fit(config: TrainConfig) -> FitResult:
    """Train ``config.model`` as configured; returns where the checkpoints are."""
    return Trainer(config).fit()


def load_for_eval(checkpoint: str | Path, data: str = "") -> tuple[Task, nn.Module, dict[str, Any]]:
    """Rebuild the task and model from a checkpoint alone (``data`` overrides its --data)."""
    ck = load_checkpoint(checkpoint)
    if ck["model"] not in models:
        raise CnnkitError(f"{checkpoint}: made by model '{ck['model']}', which no loaded plugin provides")
    spec = models.get(ck["model"])
    config = TrainConfig.from_dict(ck["config"])
    if data:  # evaluate on it: its val split, else all of it
        config.data, config.val, config.val_fraction = data, data, 0.0
    task = make_task(spec, config, classes=ck.get("classes"), state=ck.get("task_state"))
    model = task.build_model()
    load_weights_into(model, ck["model_state"], spec.name, checkpoint)
    model.eval()
    return task, model, ck


def evaluate_checkpoint(checkpoint: str | Path, data: str = "", device: str = "auto",
                        batch_size: int = 0, split: str = "val") -> dict[str, float]:
    """Metrics of a checkpoint on the ``split`` of ``data`` (or of the data it was trained on)."""
    task, model, _ = load_for_eval(checkpoint, data)
    if batch_size:
        task.config.batch_size = batch_size
    dev = devices.resolve_device(device)
    model.to(dev)
    task.config.workers = 0
    ds = task.dataset(split)
    return task.evaluate(model, task.loader(ds, train=False), dev)
