"""The ``cnnkit`` command line: a thin shell over the Python API. Each module here is one command
group; it parses options, calls the API function and prints the result. Plugins add their own
commands (``register_commands``). No torch at import: every command loads what its path needs."""

from __future__ import annotations

import os
import sys

import typer

from cnnkit.commands import data, evaluate, explain, export, models, predict, runs, train, weights  # noqa: F401 (they add their commands)
from cnnkit.commands.app import app
from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError, Interrupted
from cnnkit.core.base.version import __version__

try:  # recent typer carries its own copy of click, whose exceptions its commands raise
    from typer._click import exceptions as click_errors
except ImportError:  # typer that runs on click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]

# Commands that run a trained model: their OpenMP threads sleep between parallel regions instead of
# spinning (bench/infer_cpu.py --omp-passive: torch with 2 threads on a loaded 2-core machine went
# from 4x OpenCV's time to 0.2x for yolov3-tiny). Training keeps OpenMP's default.
INFERENCE_COMMANDS = {"detect", "classify", "eval", "export", "verify", "enroll", "stylize", "explain"}
_mounted: list[bool] = []


def _version(value: bool) -> None:
    if value:
        print(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          max_image_pixels: int = typer.Option(
              None, "--max-image-pixels", min=1, envvar="CNNKIT_MAX_IMAGE_PIXELS",
              help="Refuse images that decode to more pixels (default 89478485).")) -> None:
    """cnnkit: one command line for the classic convolutional networks."""
    if max_image_pixels is not None:
        os.environ["CNNKIT_MAX_IMAGE_PIXELS"] = str(max_image_pixels)


def _one_line(exc: CnnkitError) -> str:
    """The error's own message (a DataLoader worker wraps it in a traceback: keep the last line)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split("CnnkitError: ", 1)[-1]
    return text.splitlines()[0] if text else exc.__class__.__name__


def _usage_line(exc: click_errors.ClickException) -> str:
    """A click usage error as one line: its message, lowercased as ours are, and where the help is."""
    text = " ".join(exc.format_message().split()).rstrip(".")
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    return f"{text} (see `{ctx.command_path} --help`)" if ctx is not None else text


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: clear one-line errors with exit code 2, never a traceback."""
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in INFERENCE_COMMANDS:  # read by OpenMP when torch loads: set before that
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        if not _mounted:
            plugins.mount_commands(app)
            _mounted.append(True)
        code = app(args=args, prog_name="cnnkit", standalone_mode=False)  # --help, --version: their exit code
        sys.exit(code if isinstance(code, int) else 0)
    except click_errors.NoArgsIsHelpError:  # `cnnkit` (or `cnnkit weights`) alone: click has shown the help
        sys.exit(2)
    except click_errors.ClickException as exc:  # click's own checks (`--top 0`, a missing argument): the same one line
        print(f"error: {_usage_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:  # end of input at a prompt
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except CnnkitError as exc:
        print(f"{'stopped' if isinstance(exc, Interrupted) else 'error'}: {_one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
