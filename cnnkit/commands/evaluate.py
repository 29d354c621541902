"""``cnnkit eval``: a model's metrics on a split of a dataset (:func:`cnnkit.evaluate`)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cnnkit.commands.app import NAMES_HELP, PARTIAL_HELP, SOURCE_HELP, WEIGHTS_HELP, app, console, print_json


@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Argument(..., help=SOURCE_HELP),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluate on this data (default: the training data)."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    names: Optional[str] = typer.Option(None, "--names", help=NAMES_HELP),
    allow_partial: bool = typer.Option(False, "--allow-partial", help=PARTIAL_HELP),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(0, "--batch-size", min=0, help="0: the training batch size."),
    split: str = typer.Option("val", "--split", help="val, or test (the only command that reads a test split)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    track: bool = typer.Option(False, "--track", help="Log the evaluation to MLflow (an eval-... run with the "
                               "metrics and the task's figures: ROC and DET curves for embedders)."),
    experiment: str = typer.Option("cnnkit", "--experiment", help="MLflow experiment name (with --track)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
) -> None:
    """Evaluate a checkpoint (or a published model) on the validation split."""
    from cnnkit.model import evaluate

    metrics = evaluate(checkpoint, data, split=split, batch_size=batch_size, weights=weights, names=names,
                       allow_partial=allow_partial, device=device, track=track, experiment=experiment,
                       tracking_uri=tracking_uri)
    if as_json:
        print_json(metrics)
        return
    table = Table("metric", "value")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
