"""The ``cnnkit`` command line. Imports nothing heavy at module level: torch loads on demand."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cnnkit import __version__
from cnnkit.core import jsontext, plugins
from cnnkit.core.config import MAX_IMG_SIZE
from cnnkit.core.data.check import check_cmd
from cnnkit.core.errors import CnnkitError, Interrupted
from cnnkit.core.explain.command import explain_cmd
from cnnkit.classify_cli import PARTIAL_HELP, classify_cmd
from cnnkit.weights_cli import app as weights_app

try:  # recent typer carries its own copy of click, whose exceptions its commands raise
    from typer._click import exceptions as click_errors
except ImportError:  # typer that runs on click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]

app = typer.Typer(name="cnnkit", help="The classic CNN playbook: train, run and track every family.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(soft_wrap=True)  # lines a user copies (anchors, paths) stay whole when piped
app.add_typer(weights_app, name="weights")
app.command("classify")(classify_cmd)
app.command("explain")(explain_cmd)
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _version(value: bool) -> None:
    if value:
        print(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          max_image_pixels: Optional[int] = typer.Option(
              None, "--max-image-pixels", min=1, envvar="CNNKIT_MAX_IMAGE_PIXELS",
              help="Refuse images that decode to more pixels (default 89478485).")) -> None:
    """cnnkit: one command line for the classic convolutional networks."""
    if max_image_pixels is not None:
        os.environ["CNNKIT_MAX_IMAGE_PIXELS"] = str(max_image_pixels)


def print_json(value: Any) -> None:
    print(jsontext.dumps(value))


@app.command("plugins")
def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the loaded plugins: name, version, origin and the hooks each implements."""
    infos = plugins.plugin_infos()
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
                                                    help="Show MODEL's training recipes side by side (default, paper, ...)."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered models with the paper's parameter counts and ours (once counted)."""
    from cnnkit.core.registry import models
    from cnnkit.core.summary import param_counts

    if recipe is not None:
        return _show_recipes(models.get(recipe), as_json)

    specs = [spec for _, spec in models.items() if not task or spec.task == task]
    if task and not specs:
        raise CnnkitError(f"no models for task '{task}' (tasks: {', '.join(sorted({s.task for _, s in models.items()}))})")
    counts = param_counts(specs, count)
    rows = [{"name": spec.name, "task": spec.task, "plugin": spec.plugin,
             "params": counts[spec.name], "paper_params": spec.paper_params,
             "aliases": list(spec.aliases), "description": spec.description} for spec in specs]
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


def _show_recipes(spec: Any, as_json: bool) -> None:
    """Each recipe of ``spec`` as ``cnnkit train`` resolves it (the configuration's own defaults
    filling what a recipe leaves out), one column a recipe, and where its values come from."""
    from cnnkit.core.config import resolve_config

    names = spec.recipe_names()
    resolved = {n: resolve_config(spec.name, spec.recipe_for(n), {}, {"recipe": n}).to_dict() for n in names}
    if as_json:
        print_json({"model": spec.name, "recipes": {n: {"about": spec.recipe_about(n), "values": resolved[n]}
                                                    for n in names}})
        return
    keys = [k for k in resolved["default"] if k not in RECIPE_HIDDEN
            and (k in RECIPE_SHOWN or any(k in spec.recipe_for(n) for n in names))]
    table = Table("setting", *names, title=f"{spec.name}: training recipes (`cnnkit train {spec.name} --recipe NAME`)")
    for key in keys:
        values = [resolved[n][key] for n in names]
        table.add_row(key, *[json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in values],
                      style="bold" if len({json.dumps(v, sort_keys=True) for v in values}) > 1 else None)
    console.print(table)
    for name in names:
        console.print(f"[bold]{name}[/bold]: {spec.recipe_about(name) or '-'}")


RECIPE_SHOWN = ("epochs", "batch_size", "img_size", "optimizer", "lr", "momentum", "weight_decay", "scheduler",
                "options")  # always shown; other settings when a recipe sets them
RECIPE_HIDDEN = ("model", "recipe", "data", "out")


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


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


def _out_dir(requested: str | None, model: str) -> str:
    if requested:
        return requested
    base = Path("runs") / model
    path, n = base, 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return str(path)


@app.command("train", context_settings=EXTRA_ARGS)
def train_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A registered model name (see `cnnkit models`)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset path or synthetic:NAME[?k=v]."),
    val: Optional[str] = typer.Option(None, "--val", help="Validate on this data (any layout) instead of --data's val split."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", min=0.0, max=0.99,
                                                 help="Validate on this share of the training images (seeded cut)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=8, help=f"Input size, 8 to {MAX_IMG_SIZE}."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Start from this recipe of the model: default "
                                         "(fast, for CPUs) or paper (`cnnkit models --recipe MODEL` shows them)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd, nesterov, adam, adamw, adagrad, rmsprop "
                                            "or rmsprop-tf (epsilon inside the root)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="cosine, step, multistep, plateau, poly or none."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    burn_in: Optional[int] = typer.Option(None, "--burn-in", min=0,
                                          help="Warm-up steps: lr x (step/N)^4 (Darknet's burn_in)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (bf16, or fp16 with a GradScaler; default: bf16 on CUDA that has it)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Channels-last memory format (default: on for CUDA)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Run the model under torch.compile."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes (default: from the CPU count)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/MODEL[-N])."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue from this checkpoint."),
    save_period: Optional[int] = typer.Option(None, "--save-period", min=0, help="Also keep weights/epochN.pt every N epochs."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Start from these weights (a state dict file or a name from `cnnkit weights list`)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from the published weights (downloaded on first use)."),
    allow_partial: Optional[bool] = typer.Option(None, "--allow-partial", help="Let --weights/--pretrained leave tensors the file lacks as built, and ignore tensors the model has no place for."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    register: Optional[str] = typer.Option(None, "--register", help="Add the trained model to the MLflow Model Registry as NAME."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of options (flags win)."),
) -> None:
    """Train MODEL. Family options go after it too (e.g. --anchors, --style); see each family's docs."""
    from cnnkit.core.config import read_config_file, resolve_config
    from cnnkit.core.registry import models

    if register and no_track:
        raise CnnkitError("--register adds the tracked run's model to MLflow's registry: drop --no-track")
    spec = models.get(model)
    file_values = read_config_file(config) if config else {}
    resume_values: dict[str, Any] = {}
    if resume:
        from cnnkit.core.checkpoint import load_checkpoint, run_folder

        resume_values = dict(load_checkpoint(resume)["config"])
        resume_values.pop("resume", None)
        resume_values["out"] = run_folder(resume)  # beside the checkpoint, wherever it was made
    flags = dict(data=data, val=val, val_fraction=val_fraction, epochs=epochs, batch_size=batch_size,
                 img_size=img_size, lr=lr, optimizer=optimizer, scheduler=scheduler, weight_decay=weight_decay, burn_in=burn_in,
                 device=device, amp=amp, channels_last=channels_last, compile=compile_model, workers=workers, seed=seed, resume=resume,
                 save_period=save_period, weights=weights, pretrained=pretrained, allow_partial=allow_partial,
                 experiment=experiment, tracking_uri=tracking_uri, track=False if no_track else None,
                 register=register)
    extra = parse_extra(ctx.args)
    if extra:
        flags["options"] = extra
    flags["out"] = out or resume_values.get("out") or _out_dir(None, spec.name)
    flags["recipe"] = recipe or file_values.pop("recipe", None) or resume_values.get("recipe") or "default"
    cfg = resolve_config(spec.name, spec.recipe_for(flags["recipe"]), file_values, flags, resume_values,
                         str(config or ""))

    from cnnkit.core.engine import fit

    result = fit(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 alone reports
    summary = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"best: {result.best}\nlast: {result.last}" + (f"\nmetrics: {summary}" if summary else "")
          + (f"\nmlflow run: {result.run_id}" if result.run_id else ""))


SOURCE_HELP = "A checkpoint written by `cnnkit train`, a registered model name (its published weights) or a .cfg."
WEIGHTS_HELP = "With a model name or .cfg: a weights file or a name from `cnnkit weights list` (default: the model's own)."
NAMES_HELP = "With a model name or .cfg: a Darknet .names file, one class a line (default: the weights' classes)."


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
    import time

    from cnnkit.core.callbacks import tracked_run
    from cnnkit.core.engine import evaluate_checkpoint

    if split not in ("val", "test"):
        raise CnnkitError(f"--split {split}: choose val or test")
    with tracked_run(f"eval-{Path(checkpoint).stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                     {"checkpoint": str(checkpoint), "data": data or "", "split": split},
                     {"cnnkit.eval": "1"}, track=track, uri=tracking_uri or "", experiment=experiment,
                     progress=False) as run:
        metrics = evaluate_checkpoint(checkpoint, data or "", device, batch_size, split, weights, names, run,
                                      allow_partial)
    if as_json:
        print_json(metrics)
        return
    table = Table("metric", "value")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)


@app.command("detect")
def detect_cmd(
    checkpoint: str = typer.Argument(..., help=SOURCE_HELP),
    sources: list[str] = typer.Argument(..., help="Images or folders of images; or one video file, camera index or stream URL."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    names: Optional[str] = typer.Option(None, "--names", help=NAMES_HELP),
    allow_partial: bool = typer.Option(False, "--allow-partial", help=PARTIAL_HELP),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help=f"Inference size, 8 to {MAX_IMG_SIZE} (default: training size)."),
    save_dir: Path = typer.Option(Path("runs/detect"), "--save-dir", help="Where annotated images go."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write annotated images."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(0, "--batch-size", min=0, help="Images a batch (0: the training batch size, at most 64)."),
    as_json: bool = typer.Option(False, "--json", help="Print detections as JSON."),
    every: int = typer.Option(1, "--every", min=1, help="Video: process every Nth frame."),
) -> None:
    """Detect objects in images with a trained or published detector; boxes are in original image pixels.
    A video or stream gives one JSON line a frame and an annotated video in --save-dir."""
    from cnnkit.core.data.detection import image_paths
    from cnnkit.core.data.images import ImageFiles, write_image
    from cnnkit.core.config import check_value
    from cnnkit.core.detect import annotated_names, draw_detections
    from cnnkit.core.device import resolve_device
    from cnnkit.core.engine import load_for_eval
    from cnnkit.core.inference import for_inference
    from cnnkit.core.paths import writable_dir
    from cnnkit.core.video import detect_video, is_video

    if img_size is not None:
        check_value("img_size", img_size, " (from --img-size)")
    if not no_save:
        writable_dir(save_dir, "--save-dir")
    video = len(sources) == 1 and is_video(sources[0])
    paths = [] if video else image_paths(sources)
    if not video and not paths:
        raise CnnkitError("no images found in " + ", ".join(sources))
    task, model, _ = load_for_eval(checkpoint, weights_ref=weights, names=names, allow_partial=allow_partial,
                                   expect="detect")
    dev = resolve_device(device)
    for_inference(model, dev)
    task.config.device = str(dev)
    if video:
        return detect_video(sources[0], task, model, dev, None if no_save else save_dir, every,
                            conf=conf, iou=iou, img_size=img_size)
    batch = max(1, min(batch_size or task.config.batch_size, 64))
    results, outputs = [], annotated_names(paths)
    for images in task.loader(ImageFiles(paths), train=False, batch_size=batch, collate_fn=list):
        bad = next((x for x in images if isinstance(x, str)), None)
        if bad is not None:
            raise CnnkitError(bad)
        found = task.predict(model, images, dev, conf=conf, iou=iou, batch_size=batch,
                             img_size=img_size or task.config.img_size)
        for path, name, image, dets in zip(paths[len(results):], outputs[len(results):], images, found):
            results.append({"image": str(path), "detections": dets})
            if not no_save:
                write_image(save_dir / name, draw_detections(image, dets))
    if as_json:
        print_json(results)
        return
    for r in results:
        found = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r["detections"]) or "nothing"
        console.print(f"{r['image']}: {found}")
    if not no_save:
        console.print(f"annotated images in {save_dir}")


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `cnnkit train` (or a registered model's name)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help=f"Input size, 8 to {MAX_IMG_SIZE} and one the "
                                           "network can take (default: the training size)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Any batch size (default: batch 1)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (7 to the newest the installed torch and onnx write)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file, named *.onnx or *.torchscript as "
                                       "--format says (default: beside the checkpoint)."),
    nms: bool = typer.Option(False, "--nms", help="YOLO detectors: score threshold and NMS inside the graph (one image a run)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="With --nms: the graph's score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="With --nms: the graph's NMS IoU threshold."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a model's inference graph with its metadata, checked against torch with onnxruntime."""
    from cnnkit.core.export import export

    report = export(checkpoint, fmt, img_size, dynamic_batch, opset, out, {"conf": conf, "iou": iou} if nms else None)
    if as_json:
        print_json(vars(report))
        return
    console.print(f"{report.output}: {report.model} ({report.task}), input {report.input}, "
                  f"max difference from torch {report.max_diff:.3g} (tolerance {report.tolerance:.3g})")


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
    from cnnkit.core.registry import models
    from cnnkit.core.summary import render, summarize

    report = summarize(models.get(model), img_size=img_size, num_classes=num_classes, options=parse_extra(ctx.args))
    if as_json:
        print_json(report)
        return
    render(report, console)


@app.command("runs")
def runs_cmd(
    limit: int = typer.Option(20, "--limit", min=1),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent MLflow runs with their key metric (browse them all with `mlflow ui`)."""
    import datetime

    from cnnkit.core.tracking import recent_runs

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


data_app = typer.Typer(name="data", help="Inspect datasets without training.", no_args_is_help=True)
data_app.command("check")(check_cmd)
app.add_typer(data_app)

_mounted: list[bool] = []
# Commands that run a trained model: their OpenMP threads sleep between parallel regions instead of
# spinning (bench/infer_cpu.py --omp-passive: torch with 2 threads on a loaded 2-core machine went
# from 4x OpenCV's time to 0.2x for yolov3-tiny). Training keeps OpenMP's default.
INFERENCE_COMMANDS = {"detect", "eval", "export", "verify", "enroll", "stylize", "explain"}


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


if __name__ == "__main__":
    main()
