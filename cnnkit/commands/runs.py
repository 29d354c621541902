"""``cnnkit runs``: the recent MLflow runs."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cnnkit.commands.app import app, console, print_json


@app.command("runs")
def runs_cmd(
    limit: int = typer.Option(20, "--limit", min=1),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent MLflow runs with their key metric (browse them all with `mlflow ui`)."""
    import datetime

    from cnnkit.training import recent_runs

    rows = recent_runs(tracking_uri or "", limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no runs yet (train something: `cnnkit train resnet18`)")
        return
    table = Table()
    for column in ("run", "experiment", "model", "status", "started", "metric", "best"):
        table.add_column(column, no_wrap=column in ("run", "metric", "best"))
    for r in rows:
        started = datetime.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%m-%d %H:%M")
        table.add_row(r["run_id"][:8], r["experiment"], r["model"], r["status"], started, r["metric"],
                      "-" if r["value"] is None else f"{r['value']:.4f}")
    console.print(table)
