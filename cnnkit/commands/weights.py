"""``cnnkit weights``: list, pull, locate and verify the published weights in torch's cache."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from cnnkit.commands.app import app as root
from cnnkit.commands.app import console
from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError

app = typer.Typer(help="Published weights: list, pull (before going offline), path, verify.", no_args_is_help=True)
root.add_typer(app, name="weights")


def _rows() -> list[dict[str, Any]]:
    from cnnkit.core.base.registry import weights
    from cnnkit.core.weights.fetch import cache_path

    plugins.load_plugins()
    rows = []
    for name, w in weights.items():
        row: dict[str, Any] = {"name": name, "model": w.model, "file": w.file, "url": w.url}
        row.update({"sha256": w.sha256} if w.sha256 else {"hash_prefix": w.hash_prefix})
        row.update(size=w.size, license=w.license, variant=w.variant, plugin=w.plugin,
                   cached=cache_path(w).is_file())
        rows.append(row)
    return rows


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every registered weights file: its model, URL, hash, size, licence and whether it is cached."""
    rows = _rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("name", "hash", "size", "cached", "license"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=None if column == "license" else 6)
    for r in rows:
        digest = r.get("sha256", "")[:12] or (r.get("hash_prefix") and r["hash_prefix"] + "...") or "-"
        size = "-" if r["size"] is None else f"{r['size'] / 1e6:.0f} MB"
        table.add_row(r["name"], digest, size, "[green]yes[/green]" if r["cached"] else "no",
                      r["license"].split(" (")[0])
    console.print(table)


def _entry(name: str) -> Any:
    from cnnkit.core.base.registry import weights

    plugins.load_plugins()
    return weights.get(name)


@app.command("pull")
def pull_cmd(names: list[str] = typer.Argument(..., help="Registered weights names (see `cnnkit weights list`).")
             ) -> None:
    """Download these files into the cache now (e.g. before going offline)."""
    from cnnkit.core.weights.fetch import fetch

    for entry in [_entry(n) for n in names]:
        print(f"{entry.name}: {fetch(entry)}")


@app.command("path")
def path_cmd(name: str = typer.Argument(..., help="A registered weights name.")) -> None:
    """Where the file is (or goes) in the cache; exit code 1 when it is not there yet."""
    from cnnkit.core.weights.fetch import cache_path

    path = cache_path(_entry(name))
    print(path)
    if not path.is_file():
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd() -> None:
    """Re-hash every cached file against the registry; a file that fails is named (exit code 2)."""
    from cnnkit.core.base.registry import weights
    from cnnkit.core.weights.fetch import cache_path, check, hashed, sha256_of
    from cnnkit.core.weights.formats import parse_problem

    plugins.load_plugins()
    bad, seen = [], 0
    for name, entry in weights.items():
        path = cache_path(entry)
        if not path.is_file():
            continue
        seen += 1
        problem = check(entry, sha256_of(path), path.stat().st_size) or (
            "" if hashed(entry) else parse_problem(entry, path))
        verdict = "ok" if hashed(entry) else "ok (no published hash; parses completely)"
        print(f"{name}: {'FAILED: ' + problem if problem else verdict}")
        if problem:
            bad.append(f"{path} ({problem})")
    if bad:
        raise CnnkitError(f"{len(bad)} cached file(s) do not match the registry: {bad[0]}; delete and pull again")
    print(f"{seen} cached file(s) verified")
