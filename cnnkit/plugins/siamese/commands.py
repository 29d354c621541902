"""`cnnkit enroll`, `cnnkit verify` and `cnnkit gallery list|remove|export`.

Which weights: ``--weights CKPT`` when given; otherwise what the gallery was enrolled with (a
checkpoint's path or a registered model's name, recorded in it); otherwise the pretrained
``face-resnet`` (dlib's face ResNet). A gallery is tied to one model (its fingerprint), so
cnnkit never swaps in another one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.api import CnnkitError

WEIGHTS_HELP = ("Embedder checkpoint (from `cnnkit train`) or a registered model's name. Default: what the "
                "gallery was enrolled with, else the pretrained face-resnet.")
GALLERY_HELP = "The gallery: a SQLite file, or milvus://HOST:PORT/COLLECTION (shared by several machines)."
DETECT_HELP = "Images are already aligned face chips: embed them whole instead of finding the face."
DETECTOR_HELP = "Face detector: cnn (dlib's MMOD network) or haar (OpenCV's cascade)."
gallery_app = typer.Typer(help="Look after the gallery of enrolled people.", no_args_is_help=True)


def enroll_cmd(
    name: str = typer.Argument(..., help="The person's name."),
    images: list[str] = typer.Argument(..., help="Photos of the person (files or folders)."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    no_detect: bool = typer.Option(False, "--no-detect", help=DETECT_HELP),
    detector: str = typer.Option("cnn", "--detector", help=DETECTOR_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
) -> None:
    """Enroll NAME from a few photos: the largest face of each is embedded and stored.

    All photos or none: a photo without a face stops the enrollment (exit 2) before anything is written.
    Names: at most 128 characters, no control characters.
    """
    from cnnkit.plugins.siamese.api import Gallery, image_files
    from cnnkit.plugins.siamese.backends import checked_name, shown

    name = checked_name(name)
    paths = image_files(images)
    total = Gallery(gallery_path, weights=weights, device=device, detector=detector).enroll(
        name, paths, detect=not no_detect)
    print(f"enrolled {shown(name)}: {len(paths)} image(s) added, {total} in {gallery_path}")


def verify_cmd(
    images: list[str] = typer.Argument(..., help="Photos to verify (files or folders), or one video file, camera "
                                       "index or stream URL (one JSON line a frame)."),
    claim: Optional[str] = typer.Option(None, "--claim", help="1:1: is this NAME? (default 1:N: who is this?)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Accept at distance <= F (default: the "
                                              "model's threshold: chosen on validation, or the pretrained one's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    no_detect: bool = typer.Option(False, "--no-detect", help=DETECT_HELP),
    all_faces: bool = typer.Option(False, "--all-faces", help="Verify every face found (default: the largest)."),
    detector: str = typer.Option("cnn", "--detector", help=DETECTOR_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per image (per face with "
                                 "--all-faces): image, face, match, name, closest, distance, threshold."),
    index: str = typer.Option("exact", "--index", help="1:N search: exact, or hnsw (approximate, for large "
                              "galleries; build it first with `cnnkit gallery index --hnsw`)."),
    every: int = typer.Option(1, "--every", min=1, help="Video: verify every Nth frame."),
) -> None:
    """Verify photos (or a video, frame by frame) against the gallery. Exit code 0: every photo
    verified (a video: a face verified in some frame), 1: any not (or without a face, reported as
    "face": null; a video: no frame, said on stderr), 2: bad input."""
    from cnnkit.api import is_video
    from cnnkit.plugins.siamese.api import Gallery

    gallery = Gallery(gallery_path, weights=weights, device=device, detector=detector)
    settings = dict(claim=claim, threshold=threshold, all_faces=all_faces, index=index, detect=not no_detect)
    if len(images) == 1 and is_video(images[0]):
        raise typer.Exit(_video_verdict(images[0], gallery.verify_video(images[0], every=every, **settings), claim))
    decisions = gallery.decisions(images, **settings)
    if as_json:
        print(json.dumps([d.as_dict() for d in decisions], indent=2, allow_nan=False))
    else:
        for d in decisions:
            print(_describe(d, claim, all_faces))
    raise typer.Exit(0 if all(d.match for d in decisions) else 1)


def _video_verdict(source: str, frames: list[list[Any]], claim: Optional[str]) -> int:
    """0 when a face was verified in some frame; else 1, said in one line on stderr."""
    from cnnkit.plugins.siamese.backends import shown

    decisions = [d for faces in frames for d in faces]
    if any(d.match for d in decisions):
        return 0
    if not decisions:
        print(f"{source}: no face found in any of {len(frames)} frame(s)", file=sys.stderr)
        return 1
    best = min(decisions, key=lambda d: d.distance)
    who = f"not {shown(claim)}" if claim is not None else f"closest is {shown(str(best.closest))}"
    print(f"{source}: not verified in any of {len(frames)} frame(s): {who} (distance {best.distance:.4f} > "
          f"threshold {best.threshold:.4f} at best, {len(decisions)} face(s))", file=sys.stderr)
    return 1


def _describe(d: Any, claim: Optional[str], all_faces: bool) -> str:
    """One line for one decision."""
    from cnnkit.plugins.siamese.backends import shown

    if d.distance is None:
        return f"{d.image}: no face found"
    where = f" (face at {d.face})" if all_faces and d.face else ""
    verdict = f"verified: {shown(d.name)}" if d.match else \
        f"not verified: {'not ' + shown(claim) if claim else 'closest is ' + shown(str(d.closest))}"
    return (f"{d.image}{where}: {verdict} (distance {d.distance:.4f} "
            f"{'<=' if d.match else '>'} threshold {d.threshold:.4f})")


@gallery_app.command("list")
def gallery_list(
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The enrolled people and how many embeddings each has."""
    import datetime

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from cnnkit.plugins.siamese.api import Gallery
    from cnnkit.plugins.siamese.backends import shown

    gallery = Gallery(gallery_path)
    people, model = gallery.people(), gallery.model
    if as_json:
        print(json.dumps({"model": vars(model) if model else None, "people": people}, indent=2))
        return
    table = Table("name", "embeddings", "enrolled")
    for p in people:  # names as text, never as markup
        table.add_row(Text(shown(p["name"])), str(p["embeddings"]),
                      datetime.datetime.fromtimestamp(p["created"]).strftime("%Y-%m-%d %H:%M"))
    console = Console(soft_wrap=True)
    console.print(table)
    if model:
        console.print(Text(f"model {model.model} (fingerprint {model.fingerprint[:12]}) "
                           f"from {shown(model.checkpoint)}"))


@gallery_app.command("index")
def gallery_index(
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    hnsw: bool = typer.Option(False, "--hnsw", help="Also build the approximate HNSW graph for `verify --index hnsw`."),
) -> None:
    """Rebuild the search side from the database (it is kept in step by enroll and remove, and
    rebuilt when stale or altered); with --hnsw, (re)build the approximate index too."""
    import time

    from cnnkit.plugins.siamese.api import Gallery

    start = time.perf_counter()
    rows, unreached = Gallery(gallery_path).index(hnsw)
    built = f" (exact and hnsw; {unreached} the graph cannot reach are searched exactly)" if hnsw else ""
    print(f"indexed {rows} embedding(s) of {gallery_path}{built} in {time.perf_counter() - start:.1f} s")


@gallery_app.command("remove")
def gallery_remove(
    name: str = typer.Argument(..., help="The person to remove."),
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
) -> None:
    """Remove a person and all their embeddings."""
    from cnnkit.plugins.siamese.api import Gallery
    from cnnkit.plugins.siamese.backends import shown

    count = Gallery(gallery_path).remove(name)
    print(f"removed {shown(name)} ({count} embedding(s)) from {gallery_path}")


@gallery_app.command("export")
def gallery_export(
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here (.json, or .npz: names + float32 "
                                       "matrix + model); default: JSON on stdout."),
) -> None:
    """Export the model fingerprint, the people and their embeddings."""
    import numpy as np

    from cnnkit.api import atomic_path, writable_file
    from cnnkit.plugins.siamese.backends import open_gallery

    if out is not None:
        if out.suffix not in (".json", ".npz"):
            raise CnnkitError(f"{out}: export to a .json or .npz file")
        writable_file(out, "--out")
    with open_gallery(gallery_path, create=False, readonly=True) as gallery:
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
