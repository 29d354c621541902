"""Face detection and cropping on the real photos in ../shared/data/faces."""

import numpy as np
import pytest

from cnnkit.core.data.images import read_image
from cnnkit.core.errors import CnnkitError
from cnnkit.plugins.siamese.faces import crop, detect_faces, face_crops


def test_every_known_photo_yields_exactly_one_face(shared_data):
    photos = sorted((shared_data / "faces" / "known").glob("*/*.jpg"))
    assert len(photos) == 9
    for photo in photos:
        image = read_image(photo)
        faces = detect_faces(image)
        assert len(faces) == 1, f"{photo}: {faces}"
        assert min(crop(image, faces[0]).shape[:2]) >= 100


def test_two_faces_largest_first_or_all(shared_data):
    image = read_image(shared_data / "faces" / "probe" / "obama_and_biden.jpg")
    faces = detect_faces(image)
    assert len(faces) == 2 and faces[0].area >= faces[1].area
    assert [f for _, f in face_crops(image)] == faces[:1]
    assert [f for _, f in face_crops(image, all_faces=True)] == faces


def test_exif_rgba_and_low_resolution_photos(shared_data):
    probe, known = shared_data / "faces" / "probe", shared_data / "faces" / "known"
    upright = detect_faces(read_image(known / "obama" / "2.jpg"))[0]
    for name in ("obama2_exif_rotated.jpg", "32bit.png"):  # the same photo, sideways+EXIF and RGBA
        image = read_image(probe / name)
        assert image.shape == (1200, 626, 3)
        (face,) = detect_faces(image)
        assert abs(face.x - upright.x) <= 4 and abs(face.y - upright.y) <= 4 and abs(face.w - upright.w) <= 4
    small = read_image(probe / "obama_small.jpg")
    assert max(small.shape) <= 320 and len(detect_faces(small)) == 1


def test_no_face_is_a_clear_error_and_crops_stay_inside():
    flat = np.full((200, 300, 3), 128, np.uint8)
    with pytest.raises(CnnkitError, match="no face found.*--no-detect"):
        face_crops(flat, source="wall.jpg")
    from cnnkit.plugins.siamese.faces import Face

    assert crop(flat, Face(-10, 150, 100, 100)).shape == (70, 110, 3)  # clipped at the image edges
