"""MLflow tracking: a local ``sqlite:///mlflow.db`` unless told otherwise; one run a command."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnkit.core.base.errors import CnnkitError, Interrupted

DEFAULT_DB = "mlflow.db"
# MLflow's own HTTP defaults wait 120 s for an answer and retry 7 times with backoff (~20 min on a server
# that accepts and never answers, ~4 min on a closed port); cnnkit's, unless the user set them: a call
# gives up after about 35 s on a silent server and 5 s on a closed port
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
STOP_GRACE_S = 3.0  # once a stop signal came (or the run failed), how long a remote call may still take


class TrackingFailed(CnnkitError):
    """A call to the tracking store failed (one line: the store and MLflow's reason)."""


class TrackingInterrupted(Interrupted):
    """A stop signal came while a call to a remote tracking store was unanswered: the call was left behind."""


def tracking_uri(explicit: str = "") -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else sqlite in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def bound_http(uri: str, **overrides: str) -> None:
    """For a tracking server: MLflow's HTTP timeout and retries set to cnnkit's bounds (:data:`HTTP_DEFAULTS`,
    ``overrides``) unless the user set them in the environment."""
    if uri.startswith(("http://", "https://", "databricks")):
        for key, value in (HTTP_DEFAULTS | overrides).items():
            os.environ.setdefault(key, value)


def is_remote(uri: str) -> bool:
    """A store reached over the network (a tracking server, a database server), not a local file."""
    return ("://" in uri or uri.startswith("databricks")) and not uri.startswith(("sqlite:///", "file:"))


def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    _quiet()  # after the import, which sets MLflow's own logger to INFO ("Creating initial MLflow database tables")
    return MlflowClient(tracking_uri=uri)


def _network_cause(exc: BaseException) -> str:
    """The reason a request failed at the network (refused, no answer, unknown host), or ""."""
    cause, link = None, exc  # the deepest OSError of the chain (requests' own errors are OSErrors too)
    while link is not None:
        cause = link if isinstance(link, OSError) else cause
        link = link.__cause__ or link.__context__
    if isinstance(cause, TimeoutError):
        return f"no answer in {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    return (cause.strerror or str(cause)) if cause is not None else ""


def _failed(uri: str, exc: Exception, limit: int = 200) -> TrackingFailed:
    """One line: the network's reason, else MLflow's first line of the reason, cut at a word with an
    ellipsis past ``limit``."""
    text = str(exc).strip()
    reason = _network_cause(exc) or (text.splitlines()[0] if text else type(exc).__name__)
    if len(reason) > limit:
        reason = reason[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return TrackingFailed(f"MLflow tracking at {uri} failed: {reason}")


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
    """One MLflow run. A disabled tracker (``--no-track``, DDP rank > 0) does nothing.

    Every call is bounded: MLflow's HTTP timeout and retries (:func:`bound_http`), and with a remote
    store each call runs on a daemon thread while this one waits, noting SIGTERM and SIGINT (and passing
    them on to the handler before it): once a stop signal came, a call gets :data:`STOP_GRACE_S` more
    seconds and is then left behind (:class:`TrackingInterrupted`), so a server that does not answer
    never keeps a stopped run alive. Failures are one line (``MLflow tracking at URI failed: ...``)."""

    def __init__(self, enabled: bool = True, uri: str = "", experiment: str = "cnnkit") -> None:
        self.enabled = enabled
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.run_id = ""
        self._client: Any = None
        self.remote = is_remote(self.uri)
        self._stop: tuple[int, float] | None = None  # the first stop signal and when it came
        self._silent = False  # a call was left unanswered: the store is not asked again
        self._handlers: dict[int, Any] = {}
        bound_http(self.uri)

    # ---------------------------------------------------------------- bounded calls
    def _note(self, signum: int, frame: Any) -> None:
        """A stop signal during the run: noted for the waits, then handled as before (the trainer's stop)."""
        previous = self._handlers.get(signum, signal.SIG_DFL)
        if previous == signal.SIG_IGN:
            return
        self._stop = self._stop or (signum, time.monotonic())
        if callable(previous):
            previous(signum, frame)
        else:  # the default action ends the process: end it through the run, which records KILLED
            raise TrackingInterrupted(f"{signal.Signals(signum).name} while tracking to {self.uri}", signum)

    def _listen(self, on: bool) -> None:
        """Note stop signals while a remote run is open (main thread only, where handlers can be set)."""
        if not self.remote or threading.current_thread() is not threading.main_thread():
            return
        if on and not self._handlers:
            self._handlers = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}
        elif not on:
            for s, handler in self._handlers.items():
                signal.signal(s, handler)
            self._handlers = {}

    def call(self, fn: Callable[..., Any], *args: Any, grace: float | None = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (retried while sqlite is locked), its failure as one line. A remote
        store's call runs on a daemon thread and is left behind ``grace`` seconds (:data:`STOP_GRACE_S`
        once a stop signal came) after it started or the signal came, whichever is later."""
        try:
            if not self.remote:
                return retry_locked(fn, *args, **kwargs)
            return self._waited(fn, args, kwargs, grace)
        except CnnkitError:
            raise
        except Exception as exc:
            raise _failed(self.uri, exc) from None

    def _waited(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], grace: float | None) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = retry_locked(fn, *args, **kwargs)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc

        name = getattr(fn, "__name__", "call").strip("_")
        thread = threading.Thread(target=target, name=f"mlflow-{name}", daemon=True)
        started = time.monotonic()
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            limit = STOP_GRACE_S if self._stop is not None else grace
            since = max(started, self._stop[1]) if self._stop is not None else started
            if thread.is_alive() and limit is not None and time.monotonic() - since > limit:
                waited, self._silent = time.monotonic() - started, True
                if self._stop is None:
                    raise TrackingFailed(f"MLflow tracking at {self.uri} failed: no answer in {waited:.0f} s ({name})")
                signum = self._stop[0]
                raise TrackingInterrupted(f"{signal.Signals(signum).name} while MLflow at {self.uri} had not "
                                          f"answered for {waited:.0f} s ({name}); left unanswered", signum)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    # ---------------------------------------------------------------- the run
    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str], run_id: str = "") -> None:
        """Create the run, or reopen ``run_id`` (``--resume``: one training, one run)."""
        if not self.enabled:
            return
        self._listen(True)
        try:
            with store_lock(self.uri):
                self._client = self.call(client, self.uri)
                run = self.call(self._reopen, run_id, tags) if run_id else None
                if run is None:
                    run = self.call(self._create, run_name, tags)
                    params = _flatten(params)
                else:
                    params = {}
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.call(self._client.log_batch, self.run_id, params=items[i:i + 100])
        except BaseException as exc:
            self.end("KILLED" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "FAILED")
            if isinstance(exc, TrackingFailed):
                raise TrackingFailed(f"{exc} (use --no-track to train without it)") from None
            raise

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
        self.call(self._client.log_batch, self.run_id, metrics=batch)

    def set_tag(self, key: str, value: str) -> None:
        if self.run_id:
            self.call(self._client.set_tag, self.run_id, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id:
            self.call(self._client.log_artifact, self.run_id, str(path), artifact_path)

    @property
    def client(self) -> Any:
        """The MLflow client of the open run (None before it starts)."""
        return self._client

    def end(self, status: str = "FINISHED") -> None:
        """Record the run's end. A run that did not finish (a signal, an error) waits at most
        :data:`STOP_GRACE_S` for it and says so on stderr when the store did not take it."""
        try:
            if self.run_id:
                run_id, self.run_id = self.run_id, ""
                if status == "FINISHED":
                    self.call(self._client.set_terminated, run_id, status=status)
                    return
                # the run's own error or signal is what the user must see: the store's is a note
                reason = f"{self.uri} did not answer" if self._silent else ""
                if not reason:
                    try:
                        self.call(self._client.set_terminated, run_id, status=status, grace=STOP_GRACE_S)
                    except CnnkitError as exc:
                        reason = str(exc).splitlines()[0]
                if reason:
                    print(f"note: MLflow run {run_id} left RUNNING, not {status} ({reason})", file=sys.stderr)
        finally:
            self._listen(False)


def recent_runs(uri: str = "", limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs across experiments, newest first, with their key metric (its best value)."""
    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///") and not _sqlite_file(uri).exists():
        return []  # no store yet: none is created to say so
    bound_http(uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")  # a listing: no retries
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
