"""``cnnkit plugins``, ``cnnkit models``, ``cnnkit summary``: what is installed and how big it is."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cnnkit.commands.app import EXTRA_ARGS, app, console, parse_extra, print_json


@app.command("plugins")
def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the loaded plugins: name, version, origin and the hooks each implements."""
    from cnnkit.core.base.plugins import plugin_infos

    infos = plugin_infos()
    if as_json:
        print_json([vars(i) for i in infos])
        return
    table = Table("plugin", "version", "origin", "hooks", "status")
    for i in infos:
        table.add_row(i.name, i.version, i.origin, ", ".join(h.removeprefix("register_") for h in i.hooks),
                      f"[red]failed: {i.error}[/red]" if i.error else "[green]ok[/green]")
    console.print(table)


@app.command("models")
def models_cmd(task: Optional[str] = typer.Option(None, "--task", help="Only this task (classify, detect, ...)."),
               count: bool = typer.Option(False, "--count", help="Count the parameters of models not counted "
                                          "yet (builds them; counts are cached per cnnkit version)."),
               recipe: Optional[str] = typer.Option(None, "--recipe", metavar="MODEL",
                                                    help="Show MODEL's training recipes side by side "
                                                    "(default, paper, ...)."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered models with the paper's parameter counts and ours (once counted)."""
    from cnnkit.model import describe_models

    if recipe is not None:
        return _show_recipes(recipe, as_json)
    rows = describe_models(task, count)
    if as_json:
        print_json(rows)
        return
    table = Table("model", "task", "params", "paper", "plugin", "description")
    for r in rows:
        table.add_row(r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else ""), r["task"],
                      _millions(r["params"]), _millions(r["paper_params"]), r["plugin"], r["description"])
    console.print(table)
    if any(r["params"] is None for r in rows) and not count:
        console.print("params '-': not counted; `cnnkit models --count` counts the missing ones once (cached)")


RECIPE_SHOWN = ("epochs", "batch_size", "img_size", "optimizer", "lr", "momentum", "weight_decay", "scheduler",
                "options")  # always shown; other settings when a recipe sets them
RECIPE_HIDDEN = ("model", "recipe", "data", "out")


def _show_recipes(model: str, as_json: bool) -> None:
    """Each recipe of ``model`` as ``cnnkit train`` resolves it, one column a recipe, and where its values come from."""
    import json

    from cnnkit.training import recipes

    shown = recipes(model)
    if as_json:
        print_json(shown)
        return
    by_name = shown["recipes"]
    names = list(by_name)
    given = {n: by_name[n]["values"] for n in names}
    default = by_name["default"]["values"]
    keys = [k for k in default if k not in RECIPE_HIDDEN
            and (k in RECIPE_SHOWN or len({json.dumps(given[n][k], sort_keys=True) for n in names}) > 1)]
    table = Table("setting", *names,
                  title=f"{shown['model']}: training recipes (`cnnkit train {shown['model']} --recipe NAME`)")
    for key in keys:
        values = [given[n][key] for n in names]
        table.add_row(key, *[json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in values],
                      style="bold" if len({json.dumps(v, sort_keys=True) for v in values}) > 1 else None)
    console.print(table)
    for name in names:
        console.print(f"[bold]{name}[/bold]: {by_name[name]['about'] or '-'}")


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


@app.command("summary", context_settings=EXTRA_ARGS)
def summary_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A registered model name (or a definition file a plugin reads)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size (default: the paper's)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Outputs (default: the paper's)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A layer table (output shape, parameters, multiply-adds) with totals and the paper's figures.
    The model's architecture options go after it, as on `train` (e.g. --backbone vgg16)."""
    from cnnkit.core.models.summary import render
    from cnnkit.model import summary

    report = summary(model, img_size=img_size, num_classes=num_classes, **parse_extra(ctx.args))
    if as_json:
        print_json(report)
        return
    render(report, console)
