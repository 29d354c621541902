"""Face detection (dlib's CNN detector in torch, OpenCV's Haar cascade), dlib's 5-point landmarks
and aligned chips on the real photos in ../shared/data; dlib itself is the oracle where it helps."""

import numpy as np
import pytest

from cnnkit.core.data.images import read_image
from cnnkit.plugins.siamese.align import extract_chip, landmarker
from cnnkit.plugins.siamese.face_resnet import model_file
from cnnkit.plugins.siamese.faces import NoFaceError, detect_faces, face_chips
from tests.conftest import SHARED_DATA


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def photos():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return {p.relative_to(SHARED_DATA).as_posix(): read_image(p)
            for p in sorted((SHARED_DATA / "faces").glob("*/**/*.*")) + sorted((SHARED_DATA / "nst").glob("*.jpg"))}


@pytest.mark.slow
def test_cnn_detector_on_photos_and_paintings(photos):
    """Every known photo: one face. obama_and_biden: Biden, Obama and the child at the right edge.
    The rotated (EXIF) and RGBA copies of known/obama/2.jpg: the same box. Paintings: no face."""
    faces = {name: detect_faces(image) for name, image in photos.items()}
    for name, found in faces.items():
        if "/known/" in name:
            assert len(found) == 1 and found[0].score > 0 and len(found[0].landmarks) == 5, (name, found)
    assert len(faces["faces/probe/obama_and_biden.jpg"]) == 3
    upright = faces["faces/known/obama/2.jpg"][0]
    for copy in ("faces/probe/obama2_exif_rotated.jpg", "faces/probe/32bit.png"):
        assert faces[copy][0].as_list() == upright.as_list()
    assert len(faces["faces/probe/obama_small.jpg"]) == 1
    for painting in ("nst/starry_night.jpg", "nst/the_scream.jpg", "nst/shipwreck.jpg"):
        assert faces[painting] == [], painting
    with pytest.raises(NoFaceError, match="starry_night.jpg: no face found.*--no-detect"):
        face_chips(photos["nst/starry_night.jpg"], source="starry_night.jpg")


def test_cnn_detector_box_matches_dlibs(photos):
    dlib = pytest.importorskip("dlib")
    from cnnkit.plugins.siamese.mmod import mmod_detector

    image = photos["faces/known/kit_harington/2.jpg"]  # 630 px wide: scanned at its own size, as dlib does
    (ours,) = mmod_detector()(image)
    (theirs,) = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))(image, 0)
    r = theirs.rect
    assert _iou(ours.box, (r.left(), r.top(), r.right(), r.bottom())) > 0.8
    assert ours.score == pytest.approx(theirs.confidence, abs=0.05)


def test_haar_detector_still_available(photos):
    for name in ("faces/known/obama/2.jpg", "faces/known/rose_leslie/2.jpg"):
        (face,) = detect_faces(photos[name], detector="haar")
        assert face.score is None and len(face.landmarks) == 5
    chip, _ = face_chips(photos["faces/known/obama/2.jpg"], detector="haar")[0]
    assert chip.shape == (150, 150, 3)


def test_landmarks_and_chips_equal_dlibs(photos):
    """Given dlib's own face boxes: our landmarks equal dlib's shape predictor's (integer points)
    on most faces and differ by at most 2 px on the rest; given the same landmarks, our chip is
    dlib's get_face_chip to a fraction of a grey level."""
    dlib = pytest.importorskip("dlib")
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    detector = dlib.get_frontal_face_detector()
    exact = total = 0
    for name in ("faces/known/biden/2.jpg", "faces/known/obama/1.jpg", "faces/probe/obama_small.jpg",
                 "faces/known/rose_leslie/2.jpg"):
        image = photos[name]
        for box in detector(image, 0):
            ours = landmarker()(image, (box.left(), box.top(), box.right(), box.bottom()))
            shape = predictor(image, box)
            theirs = np.array([(p.x, p.y) for p in shape.parts()], float)
            assert np.abs(ours - theirs).max() <= 2, name
            exact += int(np.array_equal(ours, theirs))
            total += 1
            diff = np.abs(extract_chip(image, theirs).astype(int) - dlib.get_face_chip(image, shape, 150, 0.25))
            assert diff.mean() < 0.2 and diff.max() <= 4, name  # OpenCV interpolates in fixed point
    assert total == 4 and exact >= 3


def test_no_face_is_a_clear_error():
    flat = np.full((200, 300, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="wall.jpg: no face found.*--no-detect"):
        face_chips(flat, source="wall.jpg")
    with pytest.raises(Exception, match="unknown --detector 'hog'"):
        detect_faces(flat, detector="hog")
