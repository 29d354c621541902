"""MLflow Models: a trained checkpoint as a pyfunc model around cnnkit's own prediction, so
``mlflow models serve -m runs:/ID/model`` answers what ``cnnkit detect --json`` prints.

Input: a table with one column ``image`` of base64-encoded image files (PNG, JPEG, ...), one row
an image. Output: one record a row, as ``--json`` prints it (detections, an embedding, a
stylized image as base64 PNG, or class probabilities for classifiers). The model directory holds
the checkpoint and is written with ``save_model`` into a temporary folder, then logged as the
run's ``model`` artifacts (no requirement inference, no extra model load: cheap per run).
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.core.base.errors import CnnkitError

ARTIFACT = "model"  # runs:/ID/model
DETECT_PARAMS = {"conf": 0.25, "iou": 0.45}  # as `cnnkit detect`
INFERENCE_KEYS = ("cnnkit_version", "model", "task", "classes", "config", "task_state", "model_state")  # no optimizer


def encode_image(image: np.ndarray) -> str:
    """An RGB uint8 image as base64 PNG (what the served model takes)."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    return base64.b64encode(data.tobytes()).decode()


def decode_image(value: Any) -> np.ndarray:
    """base64 text (or raw bytes) of an image file -> RGB uint8."""
    import cv2

    raw = value if isinstance(value, (bytes, bytearray)) else base64.b64decode(str(value), validate=False)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CnnkitError("an input is not a readable image (send base64 image files in the 'image' column)")
    return np.ascontiguousarray(image[..., ::-1])


def records(task: Any, model: Any, images: list[np.ndarray], device: Any,
            params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready record an image, as the CLI prints it for this task; ``params``: a
    detector's ``conf`` and ``iou`` (``cnnkit detect``'s defaults otherwise)."""
    kind = task.spec.task
    if kind == "detect":
        found = task.predict(model, images, device, batch_size=len(images) or 1, **{**DETECT_PARAMS, **(params or {})})
        return [{"detections": d} for d in found]
    if kind == "embed":
        return [{"embedding": v.tolist()} for v in task.predict(model, images, device)]
    if kind == "stylize":
        return [{"image": encode_image(x)} for x in task.predict(model, images, device)]
    if kind == "classify":
        return [{"probabilities": dict(zip(task.classes, p))} for p in task.predict(model, images, device)]
    raise CnnkitError(f"{task.spec.name}: a {kind} model has no served prediction")


# MLflow advises type hints at class creation (ours are not a schema) under its own "once" filter,
# which outranks an "ignore" set here: the warning is recorded and dropped instead of shown.
with warnings.catch_warnings(record=True):
    from mlflow.pyfunc import PythonModel

    class CnnkitModel(PythonModel):
        """The pyfunc flavor: ``load_context`` rebuilds the task and model from the checkpoint
        artifact; ``predict`` runs :func:`records` on the decoded images."""

        def load_context(self, context: Any) -> None:
            from cnnkit.core.base.device import resolve_device
            from cnnkit.core.base.plugins import load_plugins
            from cnnkit.core.tasks.base import from_checkpoint
            from cnnkit.core.weights.checkpoint import load_checkpoint

            load_plugins()
            path = context.artifacts["checkpoint"]
            self.task, self.model = from_checkpoint(load_checkpoint(path), path)
            self.device = resolve_device("cpu")

        def predict(self, context, model_input, params=None):  # no type hints: MLflow reads them as a schema
            """Records for a table (or a list of dicts) with base64 images in ``image``."""
            column = model_input["image"] if hasattr(model_input, "columns") else [r["image"] for r in model_input]
            return records(self.task, self.model, [decode_image(v) for v in column], self.device, params)


def save(checkpoint: str | Path, example: np.ndarray, output: list[dict[str, Any]], folder: Path,
         params: dict[str, Any] | None = None) -> Path:
    """An MLflow Model directory for ``checkpoint`` in ``folder/model``: signature from an example
    image and its output, which is also kept as the input example."""
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.pyfunc import save_model

    from cnnkit.core.base.version import __version__
    from cnnkit.core.weights.checkpoint import load_checkpoint, save_checkpoint

    frame = pd.DataFrame({"image": [encode_image(example)]})
    path = folder / ARTIFACT
    slim = save_checkpoint(folder / Path(checkpoint).name, {k: v for k, v in load_checkpoint(checkpoint).items()
                                                             if k in INFERENCE_KEYS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_model(str(path), python_model=CnnkitModel(), artifacts={"checkpoint": str(slim)},
                   signature=infer_signature(frame, output, params=params), input_example=frame,
                   pip_requirements=[f"cnnkit=={__version__}"])
    return path


def log_model(client: Any, run_id: str, checkpoint: str | Path, task: Any, model: Any, device: Any,
              register: str = "") -> str:
    """Log ``checkpoint`` as the run's MLflow Model (``runs:/ID/model``); with ``register``, also a
    new version of that registered model. Returns the model URI."""
    for name in ("mlflow.models.model", "mlflow.pyfunc", "mlflow.models.signature"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    example = np.full((task.config.img_size, task.config.img_size, 3), 127, np.uint8)
    output = records(task, model, [example], device)
    with tempfile.TemporaryDirectory() as tmp:
        path = save(checkpoint, example, output, Path(tmp), DETECT_PARAMS if task.spec.task == "detect" else None)
        client.log_artifacts(run_id, str(path), ARTIFACT)
    uri = f"runs:/{run_id}/{ARTIFACT}"
    if register:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(register)
        except MlflowException:
            client.create_registered_model(register)
        source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT}"
        client.create_model_version(register, source, run_id=run_id)
    return uri
