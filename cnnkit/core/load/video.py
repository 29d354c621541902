"""Videos and streams for ``cnnkit detect``, ``stylize`` and ``verify``: a video file, a camera
index or a stream URL read with OpenCV's ``VideoCapture``; every Nth frame processed; one JSON
line a processed frame on stdout; an output video of the processed frames; a progress bar with
frames and frames/s on stderr. An unreadable source, or one that stops before its end, is one
error line (exit 2) and what was written until then is kept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnnkit.core.base import jsontext
from cnnkit.core.base.errors import CnnkitError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")

# what a processed frame gives: its JSON record and the frame to write (None: write nothing)
FrameFn = Callable[[np.ndarray], tuple[dict[str, Any], np.ndarray | None]]


def is_video(source: str) -> bool:
    """A camera index (``0``), a stream URL or a file with a video suffix."""
    return source.isdigit() or source.lower().startswith(STREAM_SCHEMES) or Path(source).suffix.lower() in VIDEO_SUFFIXES


class Video:
    """An opened source: ``frames()`` yields ``(index, RGB uint8 frame)``; ``stopped`` tells
    whether reading failed before the end a file announced (or at all, for a live source)."""

    def __init__(self, source: str) -> None:
        import cv2

        self.source = source
        self.live = source.isdigit() or source.lower().startswith(STREAM_SCHEMES)
        if not self.live and not Path(source).is_file():
            raise CnnkitError(f"{source}: no such video file")
        self.cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not self.cap.isOpened():
            raise CnnkitError(f"{source}: cannot open this video or stream")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.total = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self.read = 0
        self.stopped = False

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                self.stopped = self.live or self.read < self.total
                return
            self.read += 1
            yield self.read - 1, np.ascontiguousarray(frame[..., ::-1])

    def close(self) -> None:
        self.cap.release()


class Writer:
    """An mp4v (``.mp4``, ``.mov``) or MJPG (other suffixes) video of RGB frames, opened at the
    first frame (its size); frames are flushed as they come, so a stopped run keeps them."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: Any = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = "mp4v" if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else "MJPG"
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                          (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise CnnkitError(f"{self.path}: cannot write a video here")
        self.writer.write(np.ascontiguousarray(frame[..., ::-1]))
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def run(source: str, process: FrameFn, out: Path | None, every: int = 1, show_progress: bool = True) -> int:
    """Process every ``every``-th frame of ``source``: print its record as a JSON line (with
    ``frame`` and ``time`` in seconds), write its output frame to ``out``. Returns the frames
    processed; a source that stops early raises after the output is closed."""
    if every < 1:
        raise CnnkitError("--every must be at least 1")
    video = Video(source)
    writer = Writer(out, video.fps / every) if out is not None else None
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} frames/s"), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=not show_progress, transient=True)
    done, start = 0, time.perf_counter()
    try:
        with progress:
            bar = progress.add_task(Path(source).name or source, total=video.total or None, rate="-")
            for index, frame in video.frames():
                if index % every == 0:
                    record, image = process(frame)
                    print(jsontext.dumps({"frame": index, "time": round(index / video.fps, 3), **record}, indent=None), flush=True)
                    if writer is not None and image is not None:
                        writer.write(image)
                    done += 1
                progress.update(bar, completed=index + 1, rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        video.close()
        if writer is not None:
            writer.close()
    if video.stopped:
        kept = f"; {writer.count} frame(s) kept in {out}" if writer is not None and writer.count else ""
        what = "the stream stopped" if video.live else f"unreadable after frame {video.read} of {video.total}"
        if video.read == 0:
            what = "no frame could be read"
        raise CnnkitError(f"{source}: {what}{kept}")
    return done


def detect_video(source: str, task: Any, model: Any, dev: Any, save_dir: Path | None, every: int,
                 **predict: Any) -> None:
    """``cnnkit detect`` on a video or stream with a loaded detector (``task``, ``model`` on ``dev``):
    ``save_dir/<name>.mp4`` holds the annotated frames."""
    from cnnkit.core.tasks.draw import draw_detections

    size = predict.pop("img_size", None) or task.config.img_size

    def process(frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
        found = task.predict(model, [frame], dev, img_size=size, batch_size=1, **predict)[0]
        return {"detections": found}, draw_detections(frame, found) if save_dir is not None else None

    name = "camera" + source if source.isdigit() else Path(source.split("?")[0]).stem or "stream"
    run(source, process, None if save_dir is None else save_dir / f"{name}.mp4", every)
