"""`cnnkit enroll`, `cnnkit verify` and `cnnkit gallery list|remove|export`.

Which weights: ``--weights CKPT`` when given; otherwise what the gallery was enrolled with (a
checkpoint's path or a registered model's name, recorded in it); otherwise the pretrained
``face-resnet`` (dlib's face ResNet). A gallery is tied to one model (its fingerprint), so
cnnkit never swaps in another one.
"""

from __future__ import annotations

import json
import math
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
EMBED_BATCH = 64  # face chips embedded at once by `verify` over several photos
gallery_app = typer.Typer(help="Look after the gallery of enrolled people.", no_args_is_help=True)


def _weights(weights: Optional[str], gallery: Any) -> str:
    from cnnkit.plugins.siamese.pipeline import PRETRAINED, is_model_name

    if weights is not None:
        return weights
    model = gallery.model
    if model is None:
        return PRETRAINED
    if not is_model_name(model.checkpoint) and not Path(model.checkpoint).is_file():
        raise CnnkitError(f"{gallery.path} was enrolled with {model.checkpoint}, which no longer exists: "
                          "pass --weights with the same checkpoint")
    return model.checkpoint


def _images(sources: list[str]) -> list[Path]:
    from cnnkit.api import image_paths

    paths = image_paths(sources)
    if not paths:
        raise CnnkitError("no images found in " + ", ".join(sources))
    return paths


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
    from cnnkit.plugins.siamese.backends import checked_name, open_gallery, scheme_of, shown
    from cnnkit.plugins.siamese.pipeline import Embedder

    name = checked_name(name)
    paths = _images(images)
    local = scheme_of(gallery_path) == ""
    existed = not local or (Path(gallery_path).is_file() and Path(gallery_path).stat().st_size > 0)
    try:
        with open_gallery(gallery_path) as gallery:
            embedder = Embedder(_weights(weights, gallery), device)
            gallery.check(embedder.info)
            crops = [embedder.crops(p, detect=not no_detect, detector=detector)[0][0] for p in paths]
            total = gallery.enroll(name, embedder.embed(crops), [str(p) for p in paths], embedder.info)
    except BaseException:
        if not existed:  # a failed first enrollment leaves no empty gallery behind
            for leftover in ("", "-wal", "-shm", "-vectors"):
                Path(f"{gallery_path}{leftover}").unlink(missing_ok=True)
        raise
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
    import numpy as np

    from cnnkit.api import is_video
    from cnnkit.plugins.siamese.faces import NoFaceError
    from cnnkit.plugins.siamese.backends import open_gallery, shown
    from cnnkit.plugins.siamese.pipeline import Decision, Embedder, decide
    from cnnkit.plugins.siamese.vectors import nearest

    if threshold is not None and not math.isfinite(threshold):
        raise CnnkitError(f"--threshold {threshold} is not a number: give a distance such as 0.6")
    video = len(images) == 1 and is_video(images[0])
    paths = [] if video else _images(images)
    with open_gallery(gallery_path, create=False, readonly=True) as gallery:
        embedder = Embedder(_weights(weights, gallery), device)
        gallery.check(embedder.info)
        limit = threshold if threshold is not None else embedder.threshold
        if limit is None:
            raise CnnkitError(f"{embedder.checkpoint} has no stored threshold: pass --threshold")
        claimed = gallery.embeddings(claim)[1] if claim is not None else None

        def judge(vector: Any, source: Any) -> Decision:
            if not np.isfinite(vector).all():
                raise CnnkitError(f"{source}: the embedding is not finite (NaN): {embedder.checkpoint} is broken")
            if claimed is not None:
                closest, distance = claim, nearest(claimed, vector, embedder.scorer)[1]
            else:
                closest, distance = gallery.nearest(vector, embedder.scorer, index)
            if not math.isfinite(distance):
                raise CnnkitError(f"corrupt gallery: {gallery_path}: the distance to {shown(closest)} is not finite")
            return decide(closest, distance, limit, claim)

        if video:
            decisions = _verify_video(images[0], embedder, judge, all_faces, detector, every, no_detect)
            raise typer.Exit(_video_verdict(images[0], decisions, claim))
        found: list[tuple[Path, Any, Any]] = []  # (image, face, chip); face None: no face found
        for path in paths:
            try:
                found += [(path, face, chip) for chip, face in
                          embedder.crops(path, detect=not no_detect, all_faces=all_faces, detector=detector)]
            except NoFaceError:
                found.append((path, None, None))
        chips = [chip for _, _, chip in found if chip is not None]
        vectors = iter(np.concatenate([embedder.embed(chips[i:i + EMBED_BATCH])  # the folder's faces, batched
                                       for i in range(0, len(chips), EMBED_BATCH)] or [np.zeros((0, 1))]))
        decisions = []
        for path, face, chip in found:
            if chip is None:
                decisions.append(Decision(False, None, None, limit, image=str(path)))
                continue
            d = judge(next(vectors), path)
            d.image, d.face = str(path), face.as_list() if face else None
            decisions.append(d)
    if as_json:
        print(json.dumps([d.as_dict() for d in decisions], indent=2, allow_nan=False))
    else:
        for d in decisions:
            print(_describe(d, claim, all_faces))
    raise typer.Exit(0 if all(d.match for d in decisions) else 1)


def _verify_video(source: str, embedder: Any, judge: Any, all_faces: bool, detector: str, every: int,
                  no_detect: bool = False) -> list[list[Any]]:
    """One JSON line a processed frame: ``{"frame", "time", "faces": [decision, ...]}`` (empty: no face);
    returns each processed frame's decisions."""
    from cnnkit.api import run_video as run
    from cnnkit.plugins.siamese.faces import NoFaceError, face_chips

    def frame(image: Any) -> tuple[dict[str, Any], None]:
        frames.append([])
        try:
            crops = [(image, None)] if no_detect else face_chips(image, all_faces, source, detector)
        except NoFaceError:
            return {"faces": []}, None
        faces = []
        for (_, face), vector in zip(crops, embedder.embed([c for c, _ in crops])):
            d = judge(vector, source)
            d.image, d.face = source, face.as_list() if face else None
            frames[-1].append(d)
            faces.append({k: v for k, v in d.as_dict().items() if k != "image"})
        return {"faces": faces}, None

    frames: list[list[Any]] = []
    run(source, frame, None, every)
    return frames


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

    from cnnkit.plugins.siamese.backends import open_gallery, shown

    with open_gallery(gallery_path, create=False, readonly=True) as gallery:
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
        console.print(Text(f"model {model.model} (fingerprint {model.fingerprint[:12]}) from {shown(model.checkpoint)}"))


@gallery_app.command("index")
def gallery_index(
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    hnsw: bool = typer.Option(False, "--hnsw", help="Also build the approximate HNSW graph for `verify --index hnsw`."),
) -> None:
    """Rebuild the search side from the database (it is kept in step by enroll and remove, and
    rebuilt when stale or altered); with --hnsw, (re)build the approximate index too."""
    import time

    from cnnkit.plugins.siamese.backends import open_gallery

    start = time.perf_counter()
    with open_gallery(gallery_path, create=False) as gallery:
        rows = gallery.reindex().rows
        unreached = gallery.build_hnsw() if hnsw else 0
    built = f" (exact and hnsw; {unreached} the graph cannot reach are searched exactly)" if hnsw else ""
    print(f"indexed {rows} embedding(s) of {gallery_path}{built} in {time.perf_counter() - start:.1f} s")


@gallery_app.command("remove")
def gallery_remove(
    name: str = typer.Argument(..., help="The person to remove."),
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
) -> None:
    """Remove a person and all their embeddings."""
    from cnnkit.plugins.siamese.backends import open_gallery, shown

    with open_gallery(gallery_path, create=False) as gallery:
        count = gallery.remove(name)
    print(f"removed {shown(name)} ({count} embedding(s)) from {gallery_path}")


@gallery_app.command("export")
def gallery_export(
    gallery_path: str = typer.Option("gallery.db", "--gallery", help=GALLERY_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here (.json, or .npz: names + float32 "
                                       "matrix + model); default: JSON on stdout."),
) -> None:
    """Export the model fingerprint, the people and their embeddings."""
    import numpy as np

    from cnnkit.api import atomic_path
    from cnnkit.api import writable_file
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
