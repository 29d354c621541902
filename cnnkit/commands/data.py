"""``cnnkit data check``: what training would read from ``--data``, split by split."""

from __future__ import annotations

from typing import Optional

import typer

from cnnkit.commands.app import app, print_json
from cnnkit.core.base.errors import CnnkitError

data_app = typer.Typer(name="data", help="Inspect datasets without training.", no_args_is_help=True)
app.add_typer(data_app)


@data_app.command("check")
def check_cmd(
    data: str = typer.Option(..., "--data", help="Dataset path or synthetic:NAME[?k=v]."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data from another source (any layout)."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=0.99,
                                       help="Validate on this share of the training images."),
    seed: int = typer.Option(0, "--seed", help="The seed of the --val-fraction cut."),
    task: Optional[str] = typer.Option(None, "--task", help="Read the data as this task's (classify, detect, embed)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Scan a dataset as training would: splits, sources, counts, skipped images and bad boxes."""
    from cnnkit.core.data.check import check, describe

    result = check(data, val or "", val_fraction, seed, task)
    if as_json:
        print_json(result)
        return
    classes = result["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")
    print(f"data: {data} ({result['layout']}, {result['task']}); classes: {shown or '-'}")
    for split, entry in result["splits"].items():
        for line in describe(split, entry):
            print(line)
    if "missing" in result["splits"]["val"]:
        print("training needs a validation split: --val PATH or --val-fraction F")
    if not any("missing" not in e for e in result["splits"].values()):
        raise CnnkitError(f"--data {data}: no split could be read")
