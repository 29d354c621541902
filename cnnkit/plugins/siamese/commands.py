"""`cnnkit enroll`, `cnnkit verify` and `cnnkit gallery list|remove|export`.

Which weights: ``--weights CKPT`` when given; otherwise the checkpoint the gallery was enrolled
with (recorded in it); otherwise an error asking for ``--weights``: a gallery is tied to one
model, so cnnkit never guesses one from ``runs/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.core.errors import CnnkitError

WEIGHTS_HELP = ("Embedder checkpoint (from `cnnkit train siamese-small`). Default: the checkpoint the gallery "
                "was enrolled with; an empty gallery needs it.")
GALLERY_HELP = "Gallery database (SQLite)."
DETECT_HELP = "Images are already face crops: embed them whole instead of finding the face."
gallery_app = typer.Typer(help="Look after the gallery of enrolled people.", no_args_is_help=True)


def _weights(weights: Optional[Path], gallery: Any) -> Path:
    if weights is not None:
        return weights
    model = gallery.model
    if model is None:
        raise CnnkitError(f"no --weights given and {gallery.path} has no model yet: pass --weights CKPT "
                          "(e.g. runs/siamese-small/weights/best.pt)")
    if not Path(model.checkpoint).is_file():
        raise CnnkitError(f"{gallery.path} was enrolled with {model.checkpoint}, which no longer exists: "
                          "pass --weights with the same checkpoint")
    return Path(model.checkpoint)


def _images(sources: list[str]) -> list[Path]:
    from cnnkit.core.data.detection import image_paths

    paths = image_paths(sources)
    if not paths:
        raise CnnkitError("no images found in " + ", ".join(sources))
    return paths


def enroll_cmd(
    name: str = typer.Argument(..., help="The person's name."),
    images: list[str] = typer.Argument(..., help="Photos of the person (files or folders)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    gallery_path: Path = typer.Option(Path("gallery.db"), "--gallery", help=GALLERY_HELP),
    no_detect: bool = typer.Option(False, "--no-detect", help=DETECT_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
) -> None:
    """Enroll NAME from a few photos: the largest face of each is embedded and stored.

    All photos or none: a photo without a face stops the enrollment before anything is written.
    """
    from cnnkit.plugins.siamese.gallery import Gallery
    from cnnkit.plugins.siamese.pipeline import Embedder

    paths = _images(images)
    with Gallery(gallery_path) as gallery:
        embedder = Embedder(_weights(weights, gallery), device)
        gallery.check(embedder.info)
        crops = [embedder.crops(p, detect=not no_detect)[0][0] for p in paths]
        total = gallery.enroll(name, embedder.embed(crops), [str(p) for p in paths], embedder.info)
    print(f"enrolled {name}: {len(paths)} image(s) added, {total} in {gallery_path}")


def verify_cmd(
    image: Path = typer.Argument(..., help="The photo to verify."),
    claim: Optional[str] = typer.Option(None, "--claim", help="1:1: is this NAME? (default 1:N: who is this?)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Accept at distance <= F (default: the "
                                              "threshold chosen on validation, stored in the checkpoint)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    gallery_path: Path = typer.Option(Path("gallery.db"), "--gallery", help=GALLERY_HELP),
    no_detect: bool = typer.Option(False, "--no-detect", help=DETECT_HELP),
    all_faces: bool = typer.Option(False, "--all-faces", help="Verify every face found (default: the largest)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    as_json: bool = typer.Option(False, "--json", help='Print {"match", "name", "distance", "threshold"}.'),
) -> None:
    """Verify a photo against the gallery. Exit code 0: verified, 1: not verified, 2: error.

    With --all-faces the exit code is 0 when any face is verified and the JSON is a list.
    """
    from cnnkit.plugins.siamese.gallery import Gallery
    from cnnkit.plugins.siamese.pipeline import Embedder, decide

    with Gallery(gallery_path, create=False, readonly=True) as gallery:
        embedder = Embedder(_weights(weights, gallery), device)
        gallery.check(embedder.info)
        names, matrix = gallery.embeddings(claim)
    limit = threshold if threshold is not None else embedder.threshold
    if limit is None:
        raise CnnkitError(f"{embedder.checkpoint} has no stored threshold: pass --threshold")
    crops = embedder.crops(image, detect=not no_detect, all_faces=all_faces)
    vectors = embedder.embed([c for c, _ in crops])
    decisions = []
    for (_, face), vector in zip(crops, vectors):
        d = decide(embedder.scorer, vector, names, matrix, limit, claim)
        d.image, d.face = str(image), face.as_list() if face else None
        decisions.append(d)
    if as_json:
        out = [d.as_dict() for d in decisions]
        print(json.dumps(out if all_faces else out[0], indent=2))
    else:
        for d in decisions:
            where = f" (face at {d.face})" if all_faces and d.face else ""
            verdict = f"verified: {d.name}" if d.match else \
                f"not verified: {'not ' + claim if claim else 'closest is ' + str(d.closest)}"
            print(f"{image}{where}: {verdict} (distance {d.distance:.4f} "
                  f"{'<=' if d.match else '>'} threshold {d.threshold:.4f})")
    raise typer.Exit(0 if any(d.match for d in decisions) else 1)


@gallery_app.command("list")
def gallery_list(
    gallery_path: Path = typer.Option(Path("gallery.db"), "--gallery", help=GALLERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The enrolled people and how many embeddings each has."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from cnnkit.plugins.siamese.gallery import Gallery

    with Gallery(gallery_path, create=False, readonly=True) as gallery:
        people, model = gallery.people(), gallery.model
    if as_json:
        print(json.dumps({"model": vars(model) if model else None, "people": people}, indent=2))
        return
    table = Table("name", "embeddings", "enrolled")
    for p in people:
        table.add_row(p["name"], str(p["embeddings"]),
                      datetime.datetime.fromtimestamp(p["created"]).strftime("%Y-%m-%d %H:%M"))
    console = Console()
    console.print(table)
    if model:
        console.print(f"model {model.model} (fingerprint {model.fingerprint[:12]}) from {model.checkpoint}")


@gallery_app.command("remove")
def gallery_remove(
    name: str = typer.Argument(..., help="The person to remove."),
    gallery_path: Path = typer.Option(Path("gallery.db"), "--gallery", help=GALLERY_HELP),
) -> None:
    """Remove a person and all their embeddings."""
    from cnnkit.plugins.siamese.gallery import Gallery

    with Gallery(gallery_path, create=False) as gallery:
        count = gallery.remove(name)
    print(f"removed {name} ({count} embedding(s)) from {gallery_path}")


@gallery_app.command("export")
def gallery_export(
    gallery_path: Path = typer.Option(Path("gallery.db"), "--gallery", help=GALLERY_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here (.json, or .npz: names + float32 "
                                       "matrix + model); default: JSON on stdout."),
) -> None:
    """Export the model fingerprint, the people and their embeddings."""
    import numpy as np

    from cnnkit.core.atomic import atomic_path
    from cnnkit.core.paths import writable_file
    from cnnkit.plugins.siamese.gallery import Gallery

    if out is not None:
        if out.suffix not in (".json", ".npz"):
            raise CnnkitError(f"{out}: export to a .json or .npz file")
        writable_file(out, "--out")
    with Gallery(gallery_path, create=False, readonly=True) as gallery:
        data = gallery.export()
        names, matrix = gallery.embeddings()
    if out is None:
        print(json.dumps(data, indent=2))
        return
    with atomic_path(out) as tmp:
        if out.suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, names=np.asarray(names), embeddings=matrix, model=json.dumps(data["model"]))
        else:
            Path(tmp).write_text(json.dumps(data, indent=2))
    print(f"exported {len(data['identities'])} people ({len(names)} embeddings) to {out}")


def register(app: typer.Typer) -> None:
    """Mount the commands on the main app."""
    app.command("enroll")(enroll_cmd)
    app.command("verify")(verify_cmd)
    app.add_typer(gallery_app, name="gallery")
