"""MLflow tracking: a local ``sqlite:///mlflow.db`` unless told otherwise; one run a command."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from cnnkit.core.errors import CnnkitError

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str = "") -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else sqlite in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str) -> Any:
    _quiet()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


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

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        try:
            self._client = client(self.uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                exp_id = self._client.create_experiment(self.experiment, artifact_location=self._artifact_root())
            else:
                exp_id = exp.experiment_id
            from cnnkit import __version__

            run = self._client.create_run(exp_id, run_name=run_name,
                                          tags={"cnnkit.version": __version__, **tags})
        except Exception as exc:
            raise CnnkitError(f"MLflow tracking at {self.uri} failed: {str(exc).splitlines()[0][:200]} "
                              "(use --no-track to train without it)") from None
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _flatten(params).items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i:i + 100])

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
        self._client.log_batch(self.run_id, metrics=batch)

    def set_tag(self, key: str, value: str) -> None:
        if self.run_id:
            self._client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._client.set_terminated(self.run_id, status=status)
            self.run_id = ""


def recent_runs(uri: str = "", limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs across experiments, newest first, with their key metric (its best value)."""
    c = client(tracking_uri(uri))
    experiments = c.search_experiments()
    if not experiments:
        return []
    runs = c.search_runs([e.experiment_id for e in experiments], max_results=limit,
                         order_by=["attributes.start_time DESC"])
    names = {e.experiment_id: e.name for e in experiments}
    rows = []
    for run in runs:
        key = run.data.tags.get("cnnkit.key_metric", "")
        rows.append({
            "run_id": run.info.run_id,
            "experiment": names.get(run.info.experiment_id, ""),
            "name": run.info.run_name,
            "model": run.data.tags.get("cnnkit.model", ""),
            "status": run.info.status,
            "start_time": run.info.start_time,
            "metric": key,
            "value": run.data.metrics.get(f"best_{key}", run.data.metrics.get(key)),
        })
    return rows
