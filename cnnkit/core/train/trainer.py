"""The one training loop for every family, in named steps: set up the model and weights,
resume, build the loaders, train an epoch, validate, save. MLflow and the progress display
listen to the loop's events as callbacks (:mod:`cnnkit.core.train.callbacks`)."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler

from cnnkit.core.base import device as devices
from cnnkit.core.base.config import TrainConfig, validate_config
from cnnkit.core.base.errors import CnnkitError, Interrupted
from cnnkit.core.base.paths import writable_dir
from cnnkit.core.base.registry import models
from cnnkit.core.base.signals import StopRequest, stop_requests
from cnnkit.core.base.version import __version__
from cnnkit.core.data.splits import split_summary
from cnnkit.core.metrics.plots import line_plot
from cnnkit.core.models.pretrained import load_entry
from cnnkit.core.tasks.base import make_task, to_device
from cnnkit.core.train.callbacks import Callback, Run, console, tracked_run
from cnnkit.core.train.optim import add_burn_in, build_optimizer, build_scheduler
from cnnkit.core.train.tracking import TrackingInterrupted
from cnnkit.core.weights import fetch as weights
from cnnkit.core.weights.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    load_weights_into,
    remove_orphans,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


@dataclass
class FitResult:
    """What a finished training run produced."""

    out: Path
    last: Path
    best: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str = ""


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def _device_defaults(config: TrainConfig, device: torch.device) -> None:
    """``--amp`` and ``--channels-last`` when not given: on for CUDA (amp where bf16 is supported)."""
    cuda = device.type == "cuda"
    if config.amp is None:
        config.amp = cuda and torch.cuda.is_bf16_supported()
    if config.channels_last is None:
        config.channels_last = cuda


class _DeviceSums:
    """Batch-weighted sums of the loss terms and the first step whose loss was not finite,
    kept on the device, so a training step never waits for it; ``read`` copies them back once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.bad = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, losses: dict[str, torch.Tensor], n: int, step: int) -> None:
        for k, v in losses.items():
            term = v.detach().float() * n
            self.sums[k] = self.sums[k] + term if k in self.sums else term
        finite = torch.isfinite(losses["loss"].detach())
        self.bad = torch.where((self.bad < 0) & ~finite, step, self.bad)

    def read(self, seen: int, epoch: int) -> dict[str, float]:
        """The mean of each term over ``seen`` samples; stops training on a non-finite loss."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys] + [self.bad.float()]).tolist()
        means = {k: v / seen for k, v in zip(keys, values)}
        if values[-1] >= 0:
            raise CnnkitError(f"the loss became {means['loss']} at epoch {epoch + 1} step {int(values[-1]) + 1}; "
                              "try a lower --lr")
        return means


class Trainer:
    """Runs ``fit`` for one resolved config; each step of the loop is a method."""

    sync_every = 20  # training steps between read-backs of the loss (progress, non-finite check)

    def __init__(self, config: TrainConfig, callbacks: list[Callback] | None = None) -> None:
        self.config = validate_config(config)
        self.spec = models.get(config.model)
        self.resume_ckpt = load_checkpoint(config.resume) if config.resume else None
        if self.resume_ckpt is not None and self.resume_ckpt["model"] != self.spec.name:
            raise CnnkitError(f"{config.resume}: checkpoint was made by model '{self.resume_ckpt['model']}', "
                              f"not '{self.spec.name}'")
        if self.resume_ckpt is not None and int(self.resume_ckpt["epoch"]) + 1 >= config.epochs:
            done = int(self.resume_ckpt["epoch"]) + 1
            raise CnnkitError(f"{config.resume}: already trained {done} of {config.epochs} epoch(s); "
                              f"pass --epochs N with N > {done} to train on")
        writable_dir(config.out, "--out")
        self.task = make_task(self.spec, config,
                              classes=self.resume_ckpt.get("classes") if self.resume_ckpt else None,
                              state=self.resume_ckpt.get("task_state") if self.resume_ckpt else None)
        if config.img_size < self.spec.min_img_size:
            raise CnnkitError(f"{self.spec.name} needs --img-size >= {self.spec.min_img_size} "
                              f"(its architecture shrinks smaller inputs to nothing)")
        self.device = devices.resolve_device(config.device)
        _device_defaults(config, self.device)
        self.dist = devices.setup_distributed(self.device)
        self.out = Path(config.out)
        self.last_path, self.best_path = self.out / "weights" / "last.pt", self.out / "weights" / "best.pt"
        self.extra_callbacks = list(callbacks or [])
        self.start_epoch, self.best, self.history = 0, None, []
        self.stop_request = StopRequest()
        self.position = (0, 0)  # (epoch, steps done in it): where a stop signal found the loop
        self.run: Run | None = None

    # ---------------------------------------------------------------- set-up steps
    def build_datasets(self) -> None:
        """The train and val splits (the task learns its classes from them), normalised as the
        published weights the model starts from were trained."""
        self.weights_choice = self.published_weights()
        entry, cfg = self.weights_choice[0], self.config
        if entry is not None and cfg.mean is None:
            cfg.mean, cfg.std = list(entry.mean), list(entry.std)
        elif cfg.weights and cfg.mean is None and self.resume_ckpt is None:  # a checkpoint: as it was trained
            cfg.mean, cfg.std = weights.checkpoint_norm(cfg.weights)
        self.train_ds, self.val_ds = self.task.dataset("train"), self.task.dataset("val")
        self.data_lines, self.data_params = split_summary(self.train_ds, self.val_ds)

    def setup_model(self) -> None:
        """Build the model (with ``--weights``), its loss, the optimizer, schedule and precision."""
        cfg, task = self.config, self.task
        entry, path = getattr(self, "weights_choice", None) or self.published_weights()
        self.model = task.build_model().to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if entry is not None:
            loaded, source = load_entry(task, self.model, entry, path)
            console.print(loaded.line(f"{entry.name}, {source}"))
        elif cfg.weights and self.resume_ckpt is None:
            loaded = task.load_weights(self.model, cfg.weights)
            console.print(loaded.line(cfg.weights))
        if task.loss_spec is not None:  # a bad loss setting fails now, not after the data is built
            criterion = task.criterion(self.model)
            if isinstance(criterion, nn.Module):
                criterion.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        add_burn_in(self.optimizer, cfg.burn_in)
        self.scheduler = build_scheduler(self.optimizer, cfg, task.key_mode)
        self.precision = devices.Precision(self.device, cfg.amp)

    def published_weights(self) -> tuple[Any, Path | None]:
        """The registry's weights for ``--pretrained``, ``--weights NAME`` or ``--weights PATH`` of a
        file that is a registered one (by name or contents), and that file (None: the cache's);
        (None, None) for another file or nothing. The architecture variant the weights need goes
        into the config's options first."""
        cfg = self.config
        if self.resume_ckpt is not None:
            return None, None
        if cfg.weights:
            entry, path = weights.choose(cfg.weights, self.spec, cfg.options)
            return (None, None) if entry is None else (weights.use_variant(entry, self.spec, cfg.options), path)
        if cfg.pretrained and "pretrained" in self.spec.options:  # weights shipped in a package: the builder loads them
            cfg.options["pretrained"] = True
            return None, None
        return (weights.pretrained_entry(self.spec, cfg.options) if cfg.pretrained else None), None

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
        set_rng_state(ck["rng"])
        self.history = list(ck.get("history", []))

    def build_loaders(self) -> None:
        """The loaders (a P x K batch sampler, DDP's sampler or shuffled batches), DDP's model wrapper."""
        cfg, task = self.config, self.task
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        if self.device.type == "cuda":  # autotune once per shape: worth it only when the shape stays
            torch.backends.cudnn.benchmark = task.fixed_input_size
        batch_sampler = task.batch_sampler(self.train_ds)
        self.sampler = DistributedSampler(self.train_ds, seed=cfg.seed) if self.dist.enabled else None
        self.generator = torch.Generator()
        if batch_sampler is not None:
            self.train_loader = task.loader(self.train_ds, train=True, batch_sampler=batch_sampler)
        elif self.sampler is not None:
            self.train_loader = task.loader(self.train_ds, train=True, sampler=self.sampler, shuffle=False)
        else:
            # the shuffle has its own generator, reseeded each epoch: the loader's draws for its
            # workers' seed (once, as they persist) must not shift it, or --resume would differ
            self.train_loader = task.loader(self.train_ds, train=True, shuffle=False,
                                            sampler=RandomSampler(self.train_ds, generator=self.generator))
        self.val_loader = task.loader(self.val_ds, train=False)
        if len(self.train_loader) == 0:
            raise CnnkitError(f"--data {task.data_spec}: the training split is empty")

    # ---------------------------------------------------------------- the loop
    def fit(self) -> FitResult:
        cfg = self.config
        devices.seed_everything(cfg.seed + self.dist.rank)
        if self.dist.is_main:
            remove_orphans(self.last_path.parent)
        self.build_datasets()
        self.setup_model()
        self.resume()
        self.build_loaders()
        run = self.run = self.new_run()
        metrics: dict[str, float] = {}
        try:
            with self.stop_on_signal(), run:
                try:
                    metrics = self.epochs(run)
                except Exception as exc:
                    if self.stop_signal is None or (isinstance(exc, CnnkitError)
                                                    and not isinstance(exc, TrackingInterrupted)):
                        raise
                    # a loader worker hit by the signal before it could ignore it, or an MLflow call
                    # left unanswered: save the weights reached so far
                    self.stop(*self.position)
                if self.dist.is_main:
                    metrics = self.finish(run) or metrics
                    self.log_artifacts(run)
        finally:
            self.dist.close()
        final = load_checkpoint(self.best_path)["metrics"] if self.dist.is_main and self.best_path.exists() else metrics
        return FitResult(self.out, self.last_path, self.best_path, final, self.history, run.run_id)

    def epochs(self, run: Run) -> dict[str, float]:
        """Train, validate, schedule and save each epoch; the last validation metrics."""
        cfg, metrics = self.config, {}
        for epoch in range(self.start_epoch, cfg.epochs):
            train_stats = self.train_epoch(run, epoch)
            metrics = self.validate()
            self.step_schedule(metrics, train_stats)
            row = {**train_stats, **metrics, "lr": self.optimizer.param_groups[0]["lr"]}
            self.history.append({"epoch": epoch, **row})
            if self.dist.is_main:  # saved before anything is logged: a tracking failure never costs the epoch
                self.save(epoch, metrics)
            self.position = (epoch + 1, 0)  # a stop from here on keeps this epoch
            if self.dist.is_main:
                run.log_metrics(row, step=epoch)
                run.emit("on_epoch_end", f"epoch {epoch + 1}/{cfg.epochs}", row)
        return metrics

    def new_run(self) -> Run:
        """The run's lifecycle: MLflow (rank 0, unless --no-track), progress, and any extra callbacks."""
        cfg, task = self.config, self.task
        for line in self.data_lines if self.dist.is_main else []:  # data: train N images (SOURCE), val ...
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        run = tracked_run(f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", cfg.to_dict() | self.data_params,
                          {"cnnkit.plugin": self.spec.plugin, "cnnkit.model": self.spec.name,
                           "cnnkit.task": self.spec.task, "cnnkit.key_metric": f"val_{task.key_metric}",
                           "cnnkit.data": task.data_spec},
                          track=cfg.track and self.dist.is_main, uri=cfg.tracking_uri, experiment=cfg.experiment,
                          progress=self.dist.is_main,
                          resume_id=str(self.resume_ckpt.get("mlflow_run_id", "")) if self.resume_ckpt else "")
        run.callbacks += self.extra_callbacks
        return run

    def train_epoch(self, run: Run, epoch: int) -> dict[str, float]:
        """One pass over the training loader; the mean of each loss term and the throughput.

        The loop never waits for the device: loss terms are summed on it and read back (with
        the first non-finite step, the progress display) every ``sync_every`` steps and at the end."""
        cfg, task, loader = self.config, self.task, self.train_loader
        self.generator.manual_seed(cfg.seed * 1000 + epoch)
        if hasattr(self.train_ds, "epoch"):
            self.train_ds.seed, self.train_ds.epoch = cfg.seed, epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        model, optimizer, precision = self.train_model, self.optimizer, self.precision
        model.train()
        sums, means = _DeviceSums(self.device), {}
        seen, start, last = 0, time.perf_counter(), len(loader) - 1
        run.emit("on_epoch_start", f"epoch {epoch + 1}/{cfg.epochs}", len(loader))
        self.position = (epoch, 0)
        for step, batch in enumerate(loader):
            batch = to_device(batch, self.device, cfg.channels_last)
            with precision.autocast():
                losses = task.loss(model, batch, epoch * len(loader) + step)
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(losses["loss"]).backward()
            if cfg.grad_clip > 0:
                precision.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            precision.scaler.step(optimizer)
            precision.scaler.update()
            n = task.batch_len(batch)
            seen += n
            sums.add(losses, n, step)
            if step % self.sync_every == self.sync_every - 1 or step == last:
                means = sums.read(seen, epoch)
                run.emit("on_step", {"loss": means["loss"],
                                     "img/s": seen / max(time.perf_counter() - start, 1e-9)}, step + 1)
            self.position = (epoch, step + 1)
            if self.stop_signal is not None:
                self.stop(epoch, step + 1)
        return {f"train_{k}": v for k, v in means.items()} | \
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

    @contextmanager
    def stop_on_signal(self) -> Iterator[None]:
        """While the loop runs, SIGTERM (what schedulers send) or SIGINT (Ctrl-C) asks for a stop at
        the next step boundary (:meth:`stop`) instead of killing the process mid-write; a second
        Ctrl-C interrupts at once. Loader workers ignore both (:meth:`Task.loader`)."""
        with stop_requests() as self.stop_request:
            yield

    @property
    def stop_signal(self) -> int | None:
        return self.stop_request.signum

    def stop(self, epoch: int, steps: int) -> None:
        """Save ``last.pt`` now (its epoch is the last complete one, so ``--resume`` repeats this
        epoch from the weights reached so far) and end the run as KILLED."""
        name = self.stop_request.name
        if self.dist.is_main:
            last = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("val_")}
            payload = self.payload(epoch - 1, last)
            payload["interrupted"] = {"epoch": epoch, "step": steps, "signal": name}
            save_checkpoint(self.last_path, payload)
        raise Interrupted(f"{name} at epoch {epoch + 1} step {steps}: saved {self.last_path}; continue with "
                          f"`cnnkit train {self.spec.name} --resume {self.last_path}`", self.stop_signal or 15)

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
        run.log_model(self.best_path, self.task, devices.unwrap(self.model), self.device, self.config.register)
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
            "rng": rng_state(),
            "history": self.history,
            "mlflow_run_id": self.run.run_id if self.run is not None else "",
        }


def loss_curve(history: list[dict[str, float]]) -> Any:
    """A matplotlib figure of the training losses per epoch."""
    keys = sorted({k for h in history for k in h if k.startswith("train_") and k != "train_img_per_s"})
    series = {k: [h.get(k, float("nan")) for h in history] for k in keys}
    return line_plot([h["epoch"] + 1 for h in history], series, "epoch", "loss", marker="o")


def fit(config: TrainConfig) -> FitResult:
    """Train ``config.model`` as configured; returns where the checkpoints are."""
    return Trainer(config).fit()


