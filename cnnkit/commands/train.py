"""``cnnkit train``: train a registered model (:func:`cnnkit.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.commands.app import EXTRA_ARGS, SIZE_HELP, app, parse_extra


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
    img_size: Optional[int] = typer.Option(None, "--img-size", min=8, help=f"Input size, {SIZE_HELP}."),
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
    from cnnkit.training import is_main_process, train

    flags = dict(data=data, val=val, val_fraction=val_fraction, epochs=epochs, batch_size=batch_size,
                 img_size=img_size, lr=lr, recipe=recipe, optimizer=optimizer, scheduler=scheduler, weight_decay=weight_decay,
                 burn_in=burn_in, device=device, amp=amp, channels_last=channels_last, compile=compile_model,
                 workers=workers, seed=seed, out=out, resume=resume, save_period=save_period, weights=weights,
                 pretrained=pretrained, allow_partial=allow_partial, experiment=experiment,
                 tracking_uri=tracking_uri, track=False if no_track else None, register=register)
    result = train(model, config=config, **{k: v for k, v in flags.items() if v is not None}, **parse_extra(ctx.args))
    if not is_main_process():
        return  # under torchrun, rank 0 alone reports
    summary = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"best: {result.best}\nlast: {result.last}" + (f"\nmetrics: {summary}" if summary else "")
          + (f"\nmlflow run: {result.run_id}" if result.run_id else ""))
