"""MLflow tracking: a local ``sqlite:///mlflow.db`` unless told otherwise; one run a command."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnkit.core.base.errors import CnnkitError

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str = "") -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else sqlite in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    _quiet()  # after the import, which sets MLflow's own logger to INFO ("Creating initial MLflow database tables")
    return MlflowClient(tracking_uri=uri)


def _failed(uri: str, exc: Exception, limit: int = 200) -> CnnkitError:
    """One line: MLflow's first line of the reason, cut at a word with an ellipsis past ``limit``."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if len(reason) > limit:
        reason = reason[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return CnnkitError(f"MLflow tracking at {uri} failed: {reason}")


def _sqlite_file(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI; a path under a file is refused."""
    db = Path(uri.removeprefix("sqlite:///"))
    for parent in db.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise CnnkitError(f"tracking store {uri}: {parent} is a file, not a folder")
            break
    return db


def check_store(uri: str) -> bool:
    """For a local sqlite store: False when its file does not exist yet (nothing is created here),
    True when it is MLflow's (or empty); a file of anything else is refused untouched, as is a path
    under a file. Other stores: True (the server or backend answers for itself)."""
    if not uri.startswith("sqlite:///"):
        return True
    import sqlite3

    db = _sqlite_file(uri)
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise CnnkitError(f"tracking store {uri}: not an MLflow database ({exc})") from None
    if tables and "experiments" not in tables:
        raise CnnkitError(f"tracking store {uri}: not an MLflow database (its tables: "
                          f"{', '.join(sorted(tables)[:5])}); left untouched")
    return True


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise work on a local sqlite store across processes (``<db>.lock`` beside it): MLflow's
    schema creation on a new database races, and two first uses would lose runs. A database that
    is not MLflow's is refused (:func:`check_store`) before a lock file is put beside it, and
    again once locked (its tables may have been half-created by another process)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    check_store(uri)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): sqlite's own locking only
        yield
        return
    db = _sqlite_file(uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            check_store(uri)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def retry_locked(fn: Callable[..., Any], *args: Any, tries: int = 20, **kwargs: Any) -> Any:
    """Call ``fn``, retrying while sqlite says "database is locked" (another process is writing)."""
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
    return None


def owner_tags() -> dict[str, str]:
    """Who runs this process: recorded on each run so a run left RUNNING by a killed process is recognised."""
    return {"cnnkit.pid": str(os.getpid()), "cnnkit.host": socket.gethostname()}


def process_gone(tags: dict[str, str]) -> bool:
    """True when the run's process was on this host and no longer exists (SIGKILL, power loss)."""
    pid, host = tags.get("cnnkit.pid", ""), tags.get("cnnkit.host", "")
    if not pid.isdigit() or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)[:6000]
    return flat


class Tracker:
    """One MLflow run. A disabled tracker (``--no-track``, DDP rank > 0) does nothing."""

    def __init__(self, enabled: bool = True, uri: str = "", experiment: str = "cnnkit") -> None:
        self.enabled = enabled
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.run_id = ""
        self._client: Any = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str], run_id: str = "") -> None:
        """Create the run, or reopen ``run_id`` (``--resume``: one training, one run)."""
        if not self.enabled:
            return
        try:
            with store_lock(self.uri):
                self._client = client(self.uri)
                run = retry_locked(self._reopen, run_id, tags) if run_id else None
                if run is None:
                    run = retry_locked(self._create, run_name, tags)
                    params = _flatten(params)
                else:
                    params = {}
        except CnnkitError:
            raise
        except Exception as exc:
            raise CnnkitError(f"{_failed(self.uri, exc)} (use --no-track to train without it)") from None
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            retry_locked(self._client.log_batch, self.run_id, params=items[i:i + 100])

    def _create(self, run_name: str, tags: dict[str, str]) -> Any:
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = self._client.create_experiment(self.experiment, artifact_location=self._artifact_root())
        else:
            exp_id = exp.experiment_id
        from cnnkit.core.base.version import __version__

        return self._client.create_run(exp_id, run_name=run_name,
                                       tags={"cnnkit.version": __version__, **tags, **owner_tags()})

    def _reopen(self, run_id: str, tags: dict[str, str]) -> Any:
        """The run ``run_id`` set RUNNING again, or None when this store does not have it."""
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException:
            print(f"note: MLflow run {run_id} of the checkpoint is not in {self.uri}; starting a new run",
                  file=sys.stderr)
            return None
        old = run.data.tags
        if run.info.status == "RUNNING" and not process_gone(old):
            if old.get("cnnkit.host") == socket.gethostname() and old.get("cnnkit.pid") != str(os.getpid()):
                raise CnnkitError(f"MLflow run {run_id} is still running (process {old.get('cnnkit.pid')}); "
                                  "stop it first or train without --resume")
        elif run.info.status == "RUNNING":
            print(f"note: MLflow run {run_id} was left RUNNING by a killed process; continuing it", file=sys.stderr)
        self._client.update_run(run_id, status="RUNNING")
        resumes = int(old.get("cnnkit.resumes", "0")) + 1
        for key, value in {**owner_tags(), "cnnkit.resumes": str(resumes)}.items():
            self._client.set_tag(run_id, key, value)
        return run

    def _artifact_root(self) -> str | None:
        """Artifacts beside a local sqlite database rather than in ./mlruns."""
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            return (db.parent / "mlartifacts" / self.experiment).resolve().as_uri()
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        retry_locked(self._client.log_batch, self.run_id, metrics=batch)

    def set_tag(self, key: str, value: str) -> None:
        if self.run_id:
            retry_locked(self._client.set_tag, self.run_id, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    @property
    def client(self) -> Any:
        """The MLflow client of the open run (None before it starts)."""
        return self._client

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            retry_locked(self._client.set_terminated, self.run_id, status=status)
            self.run_id = ""


def recent_runs(uri: str = "", limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs across experiments, newest first, with their key metric (its best value)."""
    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///") and not _sqlite_file(uri).exists():
        return []  # no store yet: none is created to say so
    if uri.startswith(("http://", "https://")):  # a server that does not answer: one line within seconds
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        with store_lock(uri):
            c = client(uri)
            experiments = retry_locked(c.search_experiments)
        if not experiments:
            return []
        runs = retry_locked(c.search_runs, [e.experiment_id for e in experiments], max_results=limit,
                             order_by=["attributes.start_time DESC"])
    except CnnkitError:
        raise
    except Exception as exc:
        raise _failed(uri, exc) from None
    names = {e.experiment_id: e.name for e in experiments}
    rows = []
    for run in runs:
        key = run.data.tags.get("cnnkit.key_metric", "")
        rows.append({
            "run_id": run.info.run_id,
            "experiment": names.get(run.info.experiment_id, ""),
            "name": run.info.run_name,
            "model": run.data.tags.get("cnnkit.model", ""),
            "status": "STALE" if run.info.status == "RUNNING" and process_gone(run.data.tags) else run.info.status,
            "start_time": run.info.start_time,
            "metric": key,
            "value": run.data.metrics.get(f"best_{key}", run.data.metrics.get(key)),
        })
    return rows
