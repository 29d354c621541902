"""Face galleries from Python (``cnnkit.Gallery``): enroll people from photos and verify photos against
them, as ``cnnkit enroll`` and ``cnnkit verify`` do (they are shells over this class).

    g = cnnkit.Gallery("faces.db")              # or "milvus://HOST:PORT/COLLECTION"
    g.enroll("ada", ["ada1.jpg", "ada2.jpg"])
    g.verify("face.jpg")                        # the records `cnnkit verify --json` prints

Which weights: ``weights=`` when given; otherwise what the gallery was enrolled with (a checkpoint's
path or a registered model's name, recorded in it); otherwise the pretrained ``face-resnet`` (dlib's
face ResNet). A gallery is tied to one model (its fingerprint), so cnnkit never swaps in another one.
The embedder stays loaded between calls."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnkit.api import CnnkitError
from cnnkit.plugins.siamese.backends import GalleryBase, ModelInfo, checked_name, open_gallery, scheme_of, shown

EMBED_BATCH = 64  # face chips embedded at once over several photos


def image_files(sources: Any) -> list[Path]:
    """Files and folders (one or a list) as image paths; none found: one line."""
    from cnnkit.api import image_paths

    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    paths = image_paths(items)
    if not paths:
        raise CnnkitError("no images found in " + ", ".join(map(str, items)))
    return paths


def checked_threshold(threshold: float | None) -> None:
    """A distance threshold must be a number (checked before any work)."""
    if threshold is not None and not math.isfinite(threshold):
        raise CnnkitError(f"--threshold {threshold} is not a number: give a distance such as 0.6")


class Gallery:
    """The gallery at ``path`` (a SQLite file, created on the first enroll, or a Milvus URL), read and
    written with one embedder: ``weights`` (see the module), on ``device``; faces found by
    ``detector`` (``cnn``: dlib's MMOD network, ``haar``: OpenCV's cascade)."""

    def __init__(self, path: str | Path = "gallery.db", *, weights: str | None = None, device: str = "auto",
                 detector: str = "cnn") -> None:
        self.path, self.weights, self.device, self.detector = str(path), weights, device, detector
        self._embedder: Any = None

    def __repr__(self) -> str:
        return f"Gallery({self.path!r})"

    def _open(self, create: bool = False, readonly: bool = True) -> GalleryBase:
        return open_gallery(self.path, create=create, readonly=readonly)

    def _embedder_for(self, gallery: GalleryBase) -> Any:
        """The embedder: loaded once, checked against the model that made the stored embeddings."""
        from cnnkit.plugins.siamese.pipeline import PRETRAINED, Embedder, is_model_name

        if self._embedder is None:
            weights, model = self.weights, gallery.model
            if weights is None and model is not None:
                if not is_model_name(model.checkpoint) and not Path(model.checkpoint).is_file():
                    raise CnnkitError(f"{gallery.path} was enrolled with {model.checkpoint}, which no longer exists: "
                                      "pass --weights with the same checkpoint")
                weights = model.checkpoint
            self._embedder = Embedder(weights or PRETRAINED, self.device)
        gallery.check(self._embedder.info)
        return self._embedder

    @property
    def model(self) -> ModelInfo | None:
        """The model the stored embeddings come from (None while empty)."""
        with self._open(readonly=True) as gallery:
            return gallery.model

    def enroll(self, name: str, images: Any, *, detect: bool = True) -> int:
        """Add ``name``'s photos (the largest face of each; ``detect=False``: images are aligned face
        chips). All or none: a photo without a face stops it before anything is written. Returns how
        many embeddings ``name`` has now."""
        name = checked_name(name)
        paths = image_files(images)
        local = scheme_of(self.path) == ""
        existed = not local or (Path(self.path).is_file() and Path(self.path).stat().st_size > 0)
        try:
            with self._open(create=True, readonly=False) as gallery:
                embedder = self._embedder_for(gallery)
                crops = [embedder.crops(p, detect=detect, detector=self.detector)[0][0] for p in paths]
                return gallery.enroll(name, embedder.embed(crops), [str(p) for p in paths], embedder.info)
        except BaseException:
            if not existed:  # a failed first enrollment leaves no empty gallery behind
                for leftover in ("", "-wal", "-shm", "-vectors"):
                    Path(f"{self.path}{leftover}").unlink(missing_ok=True)
            raise

    def _judge(self, gallery: GalleryBase, embedder: Any, claim: str | None, threshold: float | None,
               index: str) -> Any:
        """``(vector, source) -> Decision`` against this gallery (1:N, or 1:1 with ``claim``)."""
        import numpy as np

        from cnnkit.plugins.siamese.pipeline import decide
        from cnnkit.plugins.siamese.vectors import nearest

        limit = threshold if threshold is not None else embedder.threshold
        if limit is None:
            raise CnnkitError(f"{embedder.checkpoint} has no stored threshold: pass --threshold")
        claimed = gallery.embeddings(claim)[1] if claim is not None else None

        def judge(vector: Any, source: Any) -> Any:
            if not np.isfinite(vector).all():
                raise CnnkitError(f"{source}: the embedding is not finite (NaN): {embedder.checkpoint} is broken")
            if claimed is not None:
                closest, distance = claim, nearest(claimed, vector, embedder.scorer)[1]
            else:
                closest, distance = gallery.nearest(vector, embedder.scorer, index)
            if not math.isfinite(distance):
                raise CnnkitError(f"corrupt gallery: {self.path}: the distance to {shown(closest)} is not finite")
            return decide(closest, distance, limit, claim)

        judge.limit = limit  # type: ignore[attr-defined]
        return judge

    def decisions(self, images: Any, *, claim: str | None = None, threshold: float | None = None,
                  all_faces: bool = False, index: str = "exact", detect: bool = True) -> list[Any]:
        """:meth:`verify` as ``Decision`` objects (``match``, ``name``, ``closest``, ``distance``, ...)."""
        import numpy as np

        from cnnkit.plugins.siamese.faces import NoFaceError
        from cnnkit.plugins.siamese.pipeline import Decision

        checked_threshold(threshold)
        paths = image_files(images)
        with self._open(readonly=True) as gallery:
            embedder = self._embedder_for(gallery)
            judge = self._judge(gallery, embedder, claim, threshold, index)
            found: list[tuple[Path, Any, Any]] = []  # (image, face, chip); face None: no face found
            for path in paths:
                try:
                    found += [(path, face, chip) for chip, face in
                              embedder.crops(path, detect=detect, all_faces=all_faces, detector=self.detector)]
                except NoFaceError:
                    found.append((path, None, None))
            chips = [chip for _, _, chip in found if chip is not None]
            vectors = iter(np.concatenate([embedder.embed(chips[i:i + EMBED_BATCH])  # all faces, batched
                                           for i in range(0, len(chips), EMBED_BATCH)] or [np.zeros((0, 1))]))
            decisions = []
            for path, face, chip in found:
                if chip is None:
                    decisions.append(Decision(False, None, None, judge.limit, image=str(path)))
                    continue
                d = judge(next(vectors), path)
                d.image, d.face = str(path), face.as_list() if face else None
                decisions.append(d)
        return decisions

    def verify(self, images: Any, *, claim: str | None = None, threshold: float | None = None,
               all_faces: bool = False, index: str = "exact", detect: bool = True) -> list[dict[str, Any]]:
        """Who is in each photo (1:N), or is it ``claim`` (1:1): one record an image (a face with
        ``all_faces``): image, face, match, name, closest, distance, threshold, as ``verify --json``
        prints them. ``threshold``: accept at distance <= it (default: the model's own);
        ``index``: ``exact`` or ``hnsw`` (approximate, built by :meth:`index`)."""
        return [d.as_dict() for d in self.decisions(images, claim=claim, threshold=threshold, all_faces=all_faces,
                                                    index=index, detect=detect)]

    def verify_video(self, source: str, *, claim: str | None = None, threshold: float | None = None,
                     all_faces: bool = False, index: str = "exact", detect: bool = True,
                     every: int = 1) -> list[list[Any]]:
        """Every ``every``-th frame of a video file, camera or stream verified (one JSON line a frame
        on stdout, as ``cnnkit verify`` prints); each processed frame's decisions."""
        from cnnkit.api import run_video
        from cnnkit.plugins.siamese.faces import NoFaceError, face_chips

        checked_threshold(threshold)
        frames: list[list[Any]] = []
        with self._open(readonly=True) as gallery:
            embedder = self._embedder_for(gallery)
            judge = self._judge(gallery, embedder, claim, threshold, index)

            def frame(image: Any) -> tuple[dict[str, Any], None]:
                frames.append([])
                try:
                    crops = [(image, None)] if not detect else face_chips(image, all_faces, source, self.detector)
                except NoFaceError:
                    return {"faces": []}, None
                faces = []
                for (_, face), vector in zip(crops, embedder.embed([c for c, _ in crops])):
                    d = judge(vector, source)
                    d.image, d.face = source, face.as_list() if face else None
                    frames[-1].append(d)
                    faces.append({k: v for k, v in d.as_dict().items() if k != "image"})
                return {"faces": faces}, None

            run_video(source, frame, None, every)
        return frames

    def people(self) -> list[dict[str, Any]]:
        """The enrolled people: name, number of embeddings, when enrolled."""
        with self._open(readonly=True) as gallery:
            return gallery.people()

    def remove(self, name: str) -> int:
        """Remove a person and their embeddings; how many went."""
        with self._open(readonly=False) as gallery:
            return gallery.remove(name)

    def export(self) -> dict[str, Any]:
        """The model, the people and their embeddings as plain data."""
        with self._open(readonly=True) as gallery:
            return gallery.export()

    def index(self, hnsw: bool = False) -> tuple[int, int]:
        """Rebuild the search side from the stored rows (and the approximate HNSW graph): the rows
        indexed and how many the graph cannot reach (searched exactly)."""
        with self._open(readonly=False) as gallery:
            rows = gallery.reindex().rows
            return rows, gallery.build_hnsw() if hnsw else 0
