"""Videos and streams for ``cnnkit detect``, ``stylize`` and ``verify``: a video file, a camera
index or a stream URL read with OpenCV's ``VideoCapture``; every Nth frame processed; one JSON
line a processed frame on stdout; an output video of the processed frames; a progress bar with
frames and frames/s on stderr. An unreadable source, or one that stops before its end, is one
error line (exit 2) and what was written until then is kept. A stream must answer within
:data:`OPEN_TIMEOUT_S` and keep sending within :data:`READ_TIMEOUT_S` (FFmpeg's timeouts). SIGTERM
or SIGINT stops after the current frame and closes the output video, so it plays (exit 143 / 130)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any, Callable, Iterator

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnnkit.core.base import jsontext
from cnnkit.core.base.errors import CnnkitError, Interrupted
from cnnkit.core.base.signals import StopRequest, stop_requests

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
OPEN_TIMEOUT_S = 10  # a stream that does not answer (FFmpeg's own default: 30 s)
READ_TIMEOUT_S = 30  # a stream that stops sending frames

# what a processed frame gives: its JSON record and the frame to write (None: write nothing)
FrameFn = Callable[[np.ndarray], tuple[dict[str, Any], np.ndarray | None]]


def is_stream(source: str) -> bool:
    """A stream URL (``rtsp://``, ``http://``, ...), read as given."""
    return source.lower().startswith(STREAM_SCHEMES)


def is_video(source: str) -> bool:
    """A camera index (``0``), a stream URL or a file with a video suffix."""
    return source.isdigit() or is_stream(source) or Path(source).suffix.lower() in VIDEO_SUFFIXES


def source_stem(source: str) -> str:
    """A name for outputs made from ``source``: ``camera0``, a file's or URL's stem, else ``stream``."""
    return "camera" + source if source.isdigit() else Path(source.split("?")[0]).stem or "stream"


def _quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own log lines kept off stderr (a failure is cnnkit's one line), unless
    the user asked for them."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET: read when FFmpeg first opens
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class Video:
    """An opened source: ``frames()`` yields ``(index, RGB uint8 frame)``; ``stopped`` tells
    whether reading failed before the end a file announced (or at all, for a live source).
    Frames are read ahead on a thread, so a stop signal never waits for a stalled read."""

    def __init__(self, source: str) -> None:
        import cv2

        _quiet_opencv()
        self.source = source
        self.live = source.isdigit() or is_stream(source)
        if not self.live and not Path(source).is_file():
            raise CnnkitError(f"{source}: no such video file")
        started = time.monotonic()
        if is_stream(source):
            self.cap = cv2.VideoCapture(source, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_S * 1000,
                                                              cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_S * 1000])
        else:
            self.cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not self.cap.isOpened():
            if is_stream(source) and time.monotonic() - started >= OPEN_TIMEOUT_S - 0.5:
                raise CnnkitError(f"{source}: the stream did not answer in {OPEN_TIMEOUT_S} s")
            raise CnnkitError(f"{source}: cannot open this video or stream")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 25.0
        # a file, or a URL serving one, announces its frames; a camera or live stream does not (0)
        self.total = max(int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if not source.isdigit() else 0
        self.read = 0
        self.stopped = False
        self.closing = False
        self.reader: threading.Thread | None = None

    def frames(self, stop: StopRequest | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The frames until the source ends, or until ``stop`` holds a signal."""
        queue: Queue = Queue(maxsize=2)
        self.reader = threading.Thread(target=self._read_ahead, args=(queue,), name="video-reader", daemon=True)
        self.reader.start()
        while stop is None or stop.signum is None:
            try:
                frame = queue.get(timeout=0.1)
            except Empty:
                if self.reader.is_alive() or not queue.empty():
                    continue
                return
            self.read += 1
            yield self.read - 1, frame

    def _read_ahead(self, queue: Queue) -> None:
        decoded = 0
        try:
            while not self.closing:
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    self.stopped = decoded < self.total if self.total else self.live
                    return
                decoded += 1
                frame = np.ascontiguousarray(frame[..., ::-1])
                while not self.closing:
                    try:
                        queue.put(frame, timeout=0.1)
                        break
                    except Full:
                        continue
        finally:
            self.cap.release()

    def close(self) -> None:
        """Stop reading; a read stuck on a stalled stream is left to its timeout (the reader releases it)."""
        self.closing = True
        if self.reader is None:
            self.cap.release()
        else:
            self.reader.join(timeout=1)


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
    with stop_requests() as stop:  # a signal: stop after this frame; one during the closing waits for it
        try:
            with progress:
                bar = progress.add_task(Path(source).name or source, total=video.total or None, rate="-")
                for index, frame in video.frames(stop):
                    if index % every == 0:
                        record, image = process(frame)
                        print(jsontext.dumps({"frame": index, "time": round(index / video.fps, 3), **record},
                                             indent=None), flush=True)
                        if writer is not None and image is not None:
                            writer.write(image)
                        done += 1
                    progress.update(bar, completed=index + 1,
                                    rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f}")
        finally:
            try:
                video.close()
            finally:
                if writer is not None:
                    writer.close()
    kept = f"; {writer.count} frame(s) kept in {out}" if writer is not None and writer.count else ""
    if stop.signum is not None:
        raise Interrupted(f"{stop.name} after {video.read} frame(s) of {source}{kept}", stop.signum)
    if video.stopped:
        what = "the stream stopped" if video.live else f"unreadable after frame {video.read} of {video.total}"
        if video.read == 0:
            what = "no frame could be read"
        raise CnnkitError(f"{source}: {what}{kept}")
    return done


def detect_video(source: str, model: Any, save_dir: Path | None, every: int, **settings: Any) -> None:
    """``cnnkit detect`` on a video or stream with a loaded detector (anything with
    ``predict(frames, **settings)`` giving ``Detections``: ``cnnkit.Model``): one JSON line a frame,
    and ``save_dir/<name>.mp4`` holds the annotated frames."""
    from cnnkit.core.tasks.draw import draw_detections

    settings = {**settings, "batch_size": 1}

    def process(frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
        found = model.predict([frame], **settings)[0].detections
        return {"detections": found}, draw_detections(frame, found) if save_dir is not None else None

    run(source, process, None if save_dir is None else save_dir / f"{source_stem(source)}.mp4", every)
