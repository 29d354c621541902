"""Training from Python: :func:`train` takes what ``cnnkit train`` takes, as keywords, and returns
where the checkpoints went, the final metrics and the MLflow run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.core.base.console import quiet
from cnnkit.core.base.errors import CnnkitError


def _out_dir(model: str) -> str:
    """``runs/MODEL``, or the first ``runs/MODEL-N`` not taken."""
    base = Path("runs") / model
    path, n = base, 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return str(path)


def train(model: str, *, config: str | Path | None = None, verbose: bool = True, **settings: Any) -> Any:
    """Train a registered model; ``settings`` are the options of ``cnnkit train`` as keywords
    (``data=``, ``epochs=``, ``img_size=``, ``track=False`` for ``--no-track``, ...) and the family's
    own options (``anchors=``, ``style=``, ...); ``config`` a YAML file of them (keywords win);
    ``recipe="paper"`` starts from the paper's recipe instead of the fast CPU one (see :func:`recipes`).
    Returns the run: ``best`` and ``last`` checkpoints, final ``metrics``, ``history``, ``run_id``."""
    from cnnkit.core.base.config import TrainConfig, read_config_file, resolve_config
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models

    load_plugins()
    spec = models.get(model)
    known = set(TrainConfig.__dataclass_fields__) - {"model", "options"}
    flags = {k: v for k, v in settings.items() if k in known}
    options = {k: v for k, v in settings.items() if k not in known}
    if flags.get("register") and flags.get("track") is False:
        raise CnnkitError("--register adds the tracked run's model to MLflow's registry: drop --no-track")
    file_values = read_config_file(config) if config else {}
    resume_values: dict[str, Any] = {}
    if flags.get("resume"):
        from cnnkit.core.weights.checkpoint import load_checkpoint, run_folder

        resume_values = dict(load_checkpoint(flags["resume"])["config"])
        resume_values.pop("resume", None)
        resume_values["out"] = run_folder(flags["resume"])  # beside the checkpoint, wherever it was made
    if options:
        flags["options"] = options
    flags["out"] = flags.get("out") or resume_values.get("out") or _out_dir(spec.name)
    flags["recipe"] = flags.get("recipe") or file_values.pop("recipe", None) or resume_values.get("recipe") or "default"
    cfg = resolve_config(spec.name, spec.recipe_for(flags["recipe"]), file_values, flags, resume_values,
                         str(config or ""))

    from cnnkit.core.train.trainer import fit

    with quiet(not verbose):
        return fit(cfg)


def recent_runs(tracking_uri: str = "", limit: int = 20) -> list[dict[str, Any]]:
    """The latest MLflow runs across experiments, newest first, with their key metric: what
    ``cnnkit runs --json`` prints."""
    from cnnkit.core.train.tracking import recent_runs as recent

    return recent(tracking_uri, limit)


def is_main_process() -> bool:
    """False in the ranks after the first under ``torchrun`` (rank 0 alone reports)."""
    return int(os.environ.get("RANK", "0")) == 0


def recipes(model: str) -> dict[str, Any]:
    """A model's training recipes as ``cnnkit train`` resolves them (the configuration's defaults
    filling what a recipe leaves out), with where each one's values come from: what
    ``cnnkit models --recipe MODEL --json`` prints."""
    from cnnkit.core.base.config import resolve_config
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models

    load_plugins()
    spec = models.get(model)
    return {"model": spec.name, "recipes": {
        name: {"about": spec.recipe_about(name),
               "values": resolve_config(spec.name, spec.recipe_for(name), {}, {"recipe": name}).to_dict()}
        for name in spec.recipe_names()}}
