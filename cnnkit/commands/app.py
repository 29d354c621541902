"""The typer app every command module adds itself to, and what they share for printing."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from cnnkit.core.base import jsontext
from cnnkit.core.base.config import MAX_IMG_SIZE
from cnnkit.core.base.errors import CnnkitError

app = typer.Typer(name="cnnkit", help="The classic CNN playbook: train, run and track every family.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(soft_wrap=True)  # lines a user copies (anchors, paths) stay whole when piped
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
SOURCE_HELP = "A checkpoint written by `cnnkit train`, a registered model name (its published weights) or a .cfg."
WEIGHTS_HELP = ("With a model name or .cfg: a weights file or a name from `cnnkit weights list` "
                "(default: the model's own).")
NAMES_HELP = "With a model name or .cfg: a Darknet .names file, one class a line (default: the weights' classes)."
PARTIAL_HELP = ("With --weights FILE: let the file lack tensors (left as built) or bring tensors the model has no "
                "place for (ignored).")
SIZE_HELP = f"8 to {MAX_IMG_SIZE}"


def print_json(value: Any) -> None:
    """Strict JSON (a non-finite number prints as null)."""
    print(jsontext.dumps(value))


def parse_extra(args: list[str]) -> dict[str, Any]:
    """``--key value``, ``--key=value``, ``--flag`` and ``--no-flag`` into a dict (YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise CnnkitError(f"unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            elif key.startswith("no-"):
                key, value = key[3:], "false"
            else:
                value = "true"
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.replace("-", "_")] = value
        i += 1
    return out
