"""The run lifecycle shared by ``cnnkit train`` and ``cnnkit stylize``: one :class:`Run` emits
events (run start, epoch start/end, step, metrics, artifact, run end) to its callbacks. MLflow
tracking and the progress display are two such callbacks; a plugin can add its own."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnnkit.core.base.console import verbose
from cnnkit.core.base.errors import Interrupted
from cnnkit.core.train.tracking import Tracker

console = Console(stderr=True, soft_wrap=True)


class Callback:
    """A listener on a run's events; every method is optional."""

    def on_run_start(self, run: "Run") -> None: ...
    def on_epoch_start(self, run: "Run", name: str, total: int) -> None: ...
    def on_step(self, run: "Run", stats: dict[str, float], completed: int | None = None) -> None: ...
    def on_epoch_end(self, run: "Run", name: str, row: dict[str, float]) -> None: ...
    def on_metrics(self, run: "Run", metrics: dict[str, float], step: int) -> None: ...
    def on_artifact(self, run: "Run", path: Path, folder: str | None) -> None: ...
    def on_tag(self, run: "Run", key: str, value: str) -> None: ...
    def on_model(self, run: "Run", checkpoint: Path, task: Any, model: Any, device: Any, register: str) -> None: ...
    def on_run_end(self, run: "Run", status: str) -> None: ...


class MLflowCallback(Callback):
    """Logs the run to MLflow: params and tags at start, metrics, artifacts, the final status."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_run_start(self, run: "Run") -> None:
        self.tracker.start(run.name, run.params, run.tags, run.resume_id)

    def on_metrics(self, run: "Run", metrics: dict[str, float], step: int) -> None:
        self.tracker.log_metrics(metrics, step)

    def on_artifact(self, run: "Run", path: Path, folder: str | None) -> None:
        self.tracker.log_artifact(path, folder)

    def on_tag(self, run: "Run", key: str, value: str) -> None:
        self.tracker.set_tag(key, value)

    def on_model(self, run: "Run", checkpoint: Path, task: Any, model: Any, device: Any, register: str) -> None:
        """``checkpoint`` as the run's MLflow Model (see :mod:`cnnkit.core.deploy.serving`)."""
        if self.tracker.run_id:
            from cnnkit.core.deploy.serving import log_model

            self.tracker.call(log_model, self.tracker.client, self.tracker.run_id, checkpoint, task, model, device,
                              register)

    def on_run_end(self, run: "Run", status: str) -> None:
        self.tracker.end(status)


def _stats(stats: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in stats.items())


class ProgressCallback(Callback):
    """A rich progress bar per epoch (or per optimisation) on stderr and one line per epoch.
    The bar appears at the first step, so set-up errors stay one line."""

    def __init__(self, visible: bool = True) -> None:
        self.visible = visible and verbose()  # the Python API's verbose=False hides it
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                                 disable=not visible)
        self.bar: Any = None

    def on_epoch_start(self, run: "Run", name: str, total: int) -> None:
        self.bar = self.progress.add_task(name, total=total, stats="")

    def on_step(self, run: "Run", stats: dict[str, float], completed: int | None = None) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        if completed is None:
            self.progress.update(self.bar, advance=1, stats=_stats(stats))
        else:
            self.progress.update(self.bar, completed=completed, stats=_stats(stats))

    def on_epoch_end(self, run: "Run", name: str, row: dict[str, float]) -> None:
        self.progress.stop()
        if self.visible:
            console.print(f"{name} {_stats(row)}", soft_wrap=True)

    def on_run_end(self, run: "Run", status: str) -> None:
        self.progress.stop()


class Run:
    """One run's lifecycle: ``with Run(...) as run:`` emits run start, then run end with status
    FINISHED, KILLED when a signal or Ctrl-C stopped it, or FAILED when the block raised. Offers the
    tracker's logging methods, so tasks log artifacts through it whatever callbacks listen.
    ``resume_id``: the MLflow run to continue (``--resume``) instead of a new one."""

    def __init__(self, name: str, params: dict[str, Any], tags: dict[str, str], callbacks: list[Callback],
                 resume_id: str = "") -> None:
        self.name, self.params, self.tags = name, params, tags
        self.callbacks = callbacks
        self.resume_id = resume_id
        self.status = "RUNNING"
        self.run_id = ""  # the MLflow run id, once started ("" when not tracked)

    def emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def __enter__(self) -> "Run":
        self.emit("on_run_start")
        self.run_id = next((cb.tracker.run_id for cb in self.callbacks if isinstance(cb, MLflowCallback)), "")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.status = "FINISHED"
        elif issubclass(exc_type, (Interrupted, KeyboardInterrupt)):
            self.status = "KILLED"
        else:
            self.status = "FAILED"
        self.emit("on_run_end", self.status)

    # the tracker's interface, as events
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.emit("on_metrics", metrics, step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.emit("on_artifact", Path(path), folder)

    def set_tag(self, key: str, value: str) -> None:
        self.emit("on_tag", key, value)

    def log_model(self, checkpoint: str | Path, task: Any, model: Any, device: Any, register: str = "") -> None:
        """The checkpoint as an MLflow Model (``runs:/ID/model``), registered as ``register`` if given."""
        self.emit("on_model", Path(checkpoint), task, model, device, register)

    def log_figure(self, figure: Any, name: str) -> None:
        """Save a matplotlib figure as ``name`` (png) among the run's artifacts."""
        if not self.run_id:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            figure.savefig(path, dpi=100, bbox_inches="tight")
            self.log_artifact(path, _folder(name))

    def log_image(self, image: Any, name: str) -> None:
        """Save an RGB uint8 array as ``name`` among the run's artifacts."""
        if not self.run_id:
            return
        from cnnkit.core.data.images import write_image

        with tempfile.TemporaryDirectory() as tmp:
            self.log_artifact(write_image(Path(tmp) / Path(name).name, image), _folder(name))


def _folder(name: str) -> str | None:
    parent = str(Path(name).parent)
    return None if parent == "." else parent


def tracked_run(name: str, params: dict[str, Any], tags: dict[str, str], *, track: bool, uri: str,
                experiment: str, progress: bool = True, resume_id: str = "") -> Run:
    """A run with MLflow tracking (unless ``track`` is False) and a progress display."""
    callbacks: list[Callback] = [ProgressCallback(progress)]
    if track:
        callbacks.append(MLflowCallback(Tracker(True, uri, experiment)))
    return Run(name, params, tags, callbacks, resume_id)
