"""Videos and streams: `cnnkit detect|stylize|verify` on short videos made with cv2.VideoWriter."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnkit.core.data.images import write_image
from tests.conftest import one_clear_line, run_cli
from tests.test_export import SHAPES, untrained

CONF = "0.004"  # an untrained yolov3-tiny's scores stay near their prior


def make_video(path: Path, frames: int = 12, size: tuple[int, int] = (72, 96)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (*size, 3), np.uint8))
    writer.release()
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(np.ascontiguousarray(frame[..., ::-1]))


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def detector(tmp_path):
    return untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)


def test_detect_video_every_nth_frame_like_images(tmp_path, detector):
    """--every 3 on 12 frames: frames 0, 3, 6, 9, each with the detections `cnnkit detect` finds
    in that frame as an image; the annotated video holds those 4 frames."""
    video = make_video(tmp_path / "clip.avi")
    r = run_cli("detect", detector, video, "--every", "3", "--conf", CONF, "--save-dir", tmp_path / "out")
    assert r.code == 0, r.stderr
    records = lines(r.stdout)
    assert [x["frame"] for x in records] == [0, 3, 6, 9] and records[1]["time"] == 0.3
    frames = decoded_frames(video)
    stills = [write_image(tmp_path / f"f{i}.png", frames[i]) for i in (0, 9)]
    still = json.loads(run_cli("detect", detector, *stills, "--conf", CONF, "--json", "--no-save").stdout)
    assert still[0]["detections"]
    assert [s["detections"] for s in still] == [records[0]["detections"], records[3]["detections"]]
    written = decoded_frames(tmp_path / "out" / "clip.mp4")
    assert len(written) == 4 and written[0].shape == (72, 96, 3)


def test_video_that_stops_keeps_what_was_written(tmp_path, detector):
    """A truncated file: the frames read are reported and written, then one line and exit 2."""
    video = make_video(tmp_path / "clip.avi")
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    r = run_cli("detect", detector, cut, "--conf", CONF, "--save-dir", tmp_path / "out")
    one_clear_line(r, "cut.avi", "unreadable after frame", "kept in")
    read = len(lines(r.stdout))
    assert 0 < read < 12 and len(decoded_frames(tmp_path / "out" / "cut.mp4")) == read


def test_unreadable_video_is_one_line(tmp_path, detector):
    (tmp_path / "bad.mp4").write_text("not a video")
    one_clear_line(run_cli("detect", detector, tmp_path / "bad.mp4"), "bad.mp4", "cannot open")
    one_clear_line(run_cli("detect", detector, tmp_path / "missing.mp4"), "missing.mp4", "no such video")


def test_stylize_video(tmp_path):
    """`cnnkit stylize VIDEO --model FAST` writes every frame stylized, at the video's size."""
    model = untrained("fast-style", tmp_path / "f.pt", 32)
    video = make_video(tmp_path / "clip.avi", frames=5)
    r = run_cli("stylize", video, "--model", model, "-o", tmp_path / "styled.mp4")
    assert r.code == 0, r.stderr
    frames = decoded_frames(tmp_path / "styled.mp4")
    assert len(frames) == 5 and frames[0].shape == (72, 96, 3)
    single = run_cli("stylize", write_image(tmp_path / "f0.png", decoded_frames(video)[0]), "--model", model,
                     "-o", tmp_path / "f0_styled.png")
    assert single.code == 0
    from cnnkit.core.data.images import read_image

    # mp4v is lossy: the video's first frame follows the stylized still closely, not exactly
    still = read_image(tmp_path / "f0_styled.png").ravel()
    same, other = (np.corrcoef(f.ravel(), still)[0, 1] for f in frames[:2])
    assert same > 0.8 and same > other + 0.3


def test_verify_video_per_frame(tmp_path):
    """The frame that is the enrolled chip verifies as its person (an untrained embedder puts the
    other noise frames about 0.005 away: not a match at 0.002); every frame gets its line."""
    model = untrained("siamese-small", tmp_path / "s.pt", 32)
    video = make_video(tmp_path / "clip.avi", frames=4, size=(32, 32))
    first = write_image(tmp_path / "first.png", decoded_frames(video)[0])
    r = run_cli("enroll", "ada", first, "--weights", model, "--no-detect", "--gallery", tmp_path / "g.db")
    assert r.code == 0, r.stderr
    r = run_cli("verify", video, "--weights", model, "--no-detect", "--gallery", tmp_path / "g.db",
                "--threshold", "0.002")
    assert r.code == 0, r.stderr
    records = lines(r.stdout)
    assert [x["frame"] for x in records] == [0, 1, 2, 3]
    assert records[0]["faces"][0]["name"] == "ada" and records[0]["faces"][0]["distance"] < 0.002
    assert all(x["faces"][0]["closest"] == "ada" and not x["faces"][0]["match"] for x in records[1:])
