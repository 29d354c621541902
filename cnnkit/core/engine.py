"""The one training loop for every family: epochs, AMP, checkpoints, resume, DDP, progress, MLflow."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from cnnkit import __version__
from cnnkit.core import device as devices
from cnnkit.core.checkpoint import copy_checkpoint, load_checkpoint, load_weights_into, save_checkpoint
from cnnkit.core.config import TrainConfig
from cnnkit.core.data.splits import split_summary
from cnnkit.core.errors import CnnkitError
from cnnkit.core.plots import line_plot
from cnnkit.core.registry import ModelSpec, models, resolve
from cnnkit.core.task import Task, to_device
from cnnkit.core.tracking import Tracker

console = Console(stderr=True)


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
    return resolve(spec.task_class)(spec, config, classes=classes, state=state)


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


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console, transient=False)


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


class Trainer:
    """Runs ``fit`` for one resolved config."""

    def __init__(self, config: TrainConfig) -> None:
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

    def payload(self, model: nn.Module, optimizer: Any, scheduler: Any, precision: devices.Precision,
                epoch: int, best: float | None, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "cnnkit_version": __version__,
            "model": self.spec.name,
            "task": self.spec.task,
            "classes": list(self.task.classes or []),
            "config": self.config.to_dict(),
            "task_state": self.task.state,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else {},
            "scaler_state": precision.scaler.state_dict(),
            "epoch": epoch,
            "best_metric": best,
            "key_metric": self.task.key_metric,
            "metrics": metrics,
            "rng": _rng_state(),
        }

    def fit(self) -> FitResult:
        cfg, task, dev = self.config, self.task, self.device
        devices.seed_everything(cfg.seed + self.dist.rank)
        train_ds, val_ds = task.dataset("train"), task.dataset("val")
        data_lines, data_params = split_summary(train_ds, val_ds)
        for line in data_lines if self.dist.is_main else []:
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        model = task.build_model().to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.weights and self.resume_ckpt is None:
            loaded = task.load_weights(model, cfg.weights)
            console.print(f"weights: {loaded}/{len(model.state_dict())} tensors from {cfg.weights}")
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, task.key_mode)
        precision = devices.Precision(dev, cfg.amp)
        start_epoch, best, history = 0, None, []
        if self.resume_ckpt is not None:
            ck = self.resume_ckpt
            load_weights_into(model, ck["model_state"], self.spec.name, cfg.resume)
            optimizer.load_state_dict(ck["optimizer_state"])
            if scheduler is not None and ck.get("scheduler_state"):
                scheduler.load_state_dict(ck["scheduler_state"])
            if ck.get("scaler_state"):
                precision.scaler.load_state_dict(ck["scaler_state"])
            start_epoch, best = int(ck["epoch"]) + 1, ck.get("best_metric")
            _set_rng_state(ck["rng"])
            history = list(ck.get("history", []))
        train_model: nn.Module = model
        if self.dist.enabled:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)

        batch_sampler = task.batch_sampler(train_ds)
        sampler = DistributedSampler(train_ds, seed=cfg.seed) if self.dist.enabled else None
        generator = torch.Generator()
        if batch_sampler is not None:
            train_loader = task.loader(train_ds, train=True, batch_sampler=batch_sampler)
        elif sampler is not None:
            train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                                      num_workers=cfg.workers, collate_fn=task.collate)
        else:
            train_loader = task.loader(train_ds, train=True, generator=generator)
        val_loader = task.loader(val_ds, train=False)
        if len(train_loader) == 0:
            raise CnnkitError(f"--data {task.data_spec}: the training split is empty")

        tracker = Tracker(cfg.track and self.dist.is_main, cfg.tracking_uri, cfg.experiment)
        if self.dist.is_main:
            tracker.start(f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", cfg.to_dict() | data_params,
                          {"cnnkit.plugin": self.spec.plugin, "cnnkit.model": self.spec.name,
                           "cnnkit.task": self.spec.task, "cnnkit.key_metric": f"val_{task.key_metric}",
                           "cnnkit.data": task.data_spec})
        weights = self.out / "weights"
        last_path, best_path = weights / "last.pt", weights / "best.pt"
        metrics: dict[str, float] = {}
        status = "FAILED"
        try:
            with _progress() as progress:
                for epoch in range(start_epoch, cfg.epochs):
                    generator.manual_seed(cfg.seed * 1000 + epoch)
                    if hasattr(train_ds, "epoch"):
                        train_ds.seed, train_ds.epoch = cfg.seed, epoch
                    if sampler is not None:
                        sampler.set_epoch(epoch)
                    train_stats = self._train_epoch(train_model, train_loader, optimizer, precision, progress, epoch)
                    metrics = {}
                    if self.dist.is_main:
                        model.eval()
                        metrics = {f"val_{k}" if not k.startswith("val_") else k: v
                                   for k, v in task.evaluate(model, val_loader, dev).items()}
                    self.dist.barrier()
                    key = metrics.get(f"val_{task.key_metric}", float("nan"))
                    if scheduler is not None:
                        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                            scheduler.step(key if not math.isnan(key) else train_stats["train_loss"])
                        else:
                            scheduler.step()
                    row = {**train_stats, **metrics, "lr": optimizer.param_groups[0]["lr"]}
                    history.append({"epoch": epoch, **row})
                    if self.dist.is_main:
                        tracker.log_metrics(row, step=epoch)
                        improved = _better(key, best, task.key_mode)
                        best = key if improved else best
                        payload = self.payload(model, optimizer, scheduler, precision, epoch, best, metrics)
                        payload["history"] = history
                        save_checkpoint(last_path, payload)
                        if improved or not best_path.exists():
                            copy_checkpoint(last_path, best_path)
                        if cfg.save_period and (epoch + 1) % cfg.save_period == 0:
                            copy_checkpoint(last_path, weights / f"epoch{epoch + 1}.pt")
                        console.print(f"epoch {epoch + 1}/{cfg.epochs} " + "  ".join(
                            f"{k} {v:.4g}" for k, v in row.items()), soft_wrap=True)
            if self.dist.is_main and task.finish(model, train_ds, val_loader, dev):
                model.eval()
                metrics = {f"val_{k}": v for k, v in task.evaluate(model, val_loader, dev).items()}
                tracker.log_metrics(metrics, step=cfg.epochs)
                payload = self.payload(model, optimizer, scheduler, precision, cfg.epochs - 1,
                                       metrics.get(f"val_{task.key_metric}"), metrics)
                payload["history"] = history
                save_checkpoint(last_path, payload)
                copy_checkpoint(last_path, best_path)
            if self.dist.is_main:
                if best is not None:
                    tracker.log_metrics({f"best_val_{task.key_metric}": best}, step=cfg.epochs)
                self._log_artifacts(tracker, model, val_ds, history, last_path, best_path)
            status = "FINISHED"
        finally:
            tracker.end(status)
            self.dist.close()
        final = load_checkpoint(best_path)["metrics"] if self.dist.is_main and best_path.exists() else metrics
        return FitResult(self.out, last_path, best_path, final, history, tracker.run_id)

    def _train_epoch(self, model: nn.Module, loader: DataLoader, optimizer: Any,
                     precision: devices.Precision, progress: Progress, epoch: int) -> dict[str, float]:
        cfg, task = self.config, self.task
        model.train()
        totals: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), stats="",
                                visible=self.dist.is_main)
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
            rate = seen / max(time.perf_counter() - start, 1e-9)
            progress.update(bar, advance=1, stats=f"loss {totals['loss'] / seen:.4f}  {rate:.1f} img/s")
        return {f"train_{k}": v / max(seen, 1) for k, v in totals.items()} | \
            {"train_img_per_s": seen / max(time.perf_counter() - start, 1e-9)}

    def _log_artifacts(self, tracker: Tracker, model: nn.Module, val_ds: Any, history: list[dict[str, float]],
                       last: Path, best: Path) -> None:
        if not tracker.run_id:
            return
        tracker.log_artifact(last, "weights")
        tracker.log_artifact(best, "weights")
        tracker.log_figure(loss_curve(history), "loss_curve.png")
        self.task.log_artifacts(model, val_ds, tracker, self.device)


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
