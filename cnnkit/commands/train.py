"""``cnnkit train``: train a registered model (:func:`cnnkit.train`). Its options are the training
settings as declared in :class:`cnnkit.core.base.config.TrainConfig` (type, default, help, limit in
one place): each setting with a flag becomes one option here, a key of ``--config FILE`` and a
keyword of ``cnnkit.train``."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.commands.app import EXTRA_ARGS, app, parse_extra
from cnnkit.core.base.config import TrainConfig


def _options() -> list[inspect.Parameter]:
    """One ``--flag`` per training setting that has one; ``None`` (not given) by default, so the
    layers below (recipe, checkpoint, config file) keep their values."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("flag")
        if flag is None:
            continue
        name = flag or "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # bool | None -> bool
        decl = f"{name}/--no-{name[2:]}" if base is bool else name
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[base],
                                        default=typer.Option(None, decl, help=f.metadata["help"])))
    return params


def train_cmd(ctx: typer.Context, model: str, config: Optional[Path], **settings: Any) -> None:
    """Train MODEL. Family options go after it too (e.g. --anchors, --style); see each family's docs."""
    from cnnkit.training import is_main_process, train

    given = {k: v for k, v in settings.items() if v is not None}
    result = train(model, config=config, **given, **parse_extra(ctx.args))
    if not is_main_process():
        return  # under torchrun, rank 0 alone reports
    summary = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"best: {result.best}\nlast: {result.last}" + (f"\nmetrics: {summary}" if summary else "")
          + (f"\nmlflow run: {result.run_id}" if result.run_id else ""))


_PARAMS = [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                      default=typer.Argument(..., help="A registered model name (see `cnnkit models`).")),
    inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[Path],
                      default=typer.Option(None, "--config", help="YAML file of settings (flags win).")),
]
train_cmd.__signature__ = inspect.Signature([*_PARAMS, *_options()])  # type: ignore[attr-defined]
train_cmd.__annotations__ = {p.name: p.annotation for p in train_cmd.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.command("train", context_settings=EXTRA_ARGS)(train_cmd)
