"""`cnnkit enroll`, `cnnkit verify` and `cnnkit gallery` end to end with a quickly trained embedder:
the point is the pipeline (detect, crop, embed, store, search, exit codes), not the accuracy."""

import json
from pathlib import Path

import numpy as np
import pytest

from cnnkit.core.data.images import write_image
from cnnkit.core.data.synthetic import Glyphs
from cnnkit.core.weights.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A siamese-small checkpoint after one short epoch on synthetic glyphs (no MLflow)."""
    out = tmp_path_factory.mktemp("siamese") / "run"
    r = run_cli("train", "siamese-small", "--data", "synthetic:glyphs?ids=8&per_id=4", "--epochs", "1",
                "--batch-size", "16", "--img-size", "32", "--out", out, "--no-track")
    assert r.code == 0, r.stderr
    return out / "weights" / "best.pt"


@pytest.fixture
def other_ckpt(ckpt, tmp_path):
    """The same model with other weights (so another fingerprint)."""
    ck = load_checkpoint(ckpt)
    ck["model_state"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ck["model_state"].items()}
    return save_checkpoint(tmp_path / "other.pt", ck)


def _glyph_images(folder, identity_ids=(0, 1, 2), per_id=3):
    glyphs = Glyphs("val", ids=8, per_id=per_id, size=32)
    paths = {}
    for i in identity_ids:
        paths[i] = [write_image(folder / f"g{i}_{j}.png", glyphs[i * per_id + j][0]) for j in range(per_id)]
    return paths


def test_enroll_verify_and_gallery_commands_on_crops(cli, ckpt, tmp_path):
    images = _glyph_images(tmp_path)
    (tmp_path / "more").mkdir()
    for i, src in enumerate((images[0][1], images[2][1])):
        (tmp_path / "more" / f"{i}.png").write_bytes(src.read_bytes())
    for i in (0, 1):
        r = cli("enroll", f"person{i}", *images[i][:2], "--weights", ckpt, "--no-detect")
        assert r.code == 0, r.stderr
        assert f"enrolled person{i}: 2 image(s)" in r.stdout
    r = cli("gallery", "list", "--json")
    listed = json.loads(r.stdout)
    assert [(p["name"], p["embeddings"]) for p in listed["people"]] == [("person0", 2), ("person1", 2)]
    assert listed["model"]["model"] == "siamese-small" and len(listed["model"]["fingerprint"]) == 64

    # 1:N with no --weights: the gallery's own checkpoint is used; a generous threshold accepts
    r = cli("verify", images[0][0], "--no-detect", "--json", "--threshold", "2.5")
    assert r.code == 0, r.stderr
    (out,) = json.loads(r.stdout)
    assert set(out) == {"image", "face", "match", "name", "closest", "distance", "threshold"}
    assert out["match"] is True and out["name"] == "person0" and out["distance"] == pytest.approx(0.0, abs=1e-3)
    # 1:1: the enrolled image itself is at distance 0 from its claim
    r = cli("verify", images[1][0], "--claim", "person1", "--no-detect", "--json")
    assert r.code == 0 and json.loads(r.stdout)[0]["name"] == "person1"
    # a threshold of 0 rejects an image that was never enrolled: exit code 1
    r = cli("verify", images[2][0], "--claim", "person0", "--no-detect", "--threshold", "0", "--json")
    assert r.code == 1 and json.loads(r.stdout)[0]["match"] is False
    # several images (files and folders): one object each; exit 1 as one of them is not verified
    r = cli("verify", images[0][0], tmp_path / "more", "--no-detect", "--json", "--threshold", "1e-3")
    out = json.loads(r.stdout)
    assert r.code == 1 and [o["match"] for o in out] == [True, True, False]
    assert [o["name"] for o in out] == ["person0", "person0", None] and out[2]["closest"] is not None
    r = cli("verify", images[2][0], "--no-detect", "--threshold", "0")
    assert r.code == 1 and "not verified: closest is person" in r.stdout
    # the approximate index answers as the exact search on a small gallery
    r = cli("verify", images[0][0], "--no-detect", "--index", "hnsw")
    assert r.code == 2 and "gallery index --hnsw" in r.stderr
    r = cli("gallery", "index", "--hnsw")
    assert r.code == 0 and "indexed 4 embedding(s)" in r.stdout and "0 the graph cannot reach" in r.stdout
    exact = json.loads(cli("verify", images[0][0], tmp_path / "more", "--no-detect", "--json").stdout)
    approx = json.loads(cli("verify", images[0][0], tmp_path / "more", "--no-detect", "--json", "--index",
                            "hnsw").stdout)
    assert [(o["closest"], o["distance"]) for o in approx] == [(o["closest"], pytest.approx(o["distance"], abs=1e-5))
                                                              for o in exact]

    r = cli("gallery", "export", "--out", "g.npz")
    assert r.code == 0, r.stderr
    data = np.load("g.npz")
    assert data["embeddings"].shape == (4, 128) and data["embeddings"].dtype == np.float32
    assert list(data["names"]) == ["person0", "person0", "person1", "person1"]
    assert json.loads(cli("gallery", "export").stdout)["identities"][0]["name"] == "person0"
    r = cli("gallery", "remove", "person0")
    assert r.code == 0 and "2 embedding(s)" in r.stdout
    assert [p["name"] for p in json.loads(cli("gallery", "list", "--json").stdout)["people"]] == ["person1"]


def test_error_paths_exit_2_with_one_line(cli, ckpt, other_ckpt, tmp_path):
    images = _glyph_images(tmp_path, (0,), 1)[0]

    def error(*args, match):
        r = cli(*args)
        assert r.code == 2, (r.code, r.stdout, r.stderr)
        assert match in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    error("verify", images[0], "--no-detect", "--gallery", "none.db", match="no such gallery")
    error("enroll", "ada", images[0], "--weights", ckpt, match="no face found")  # a glyph is not a face
    assert not list(Path().glob("gallery.db*"))  # a failed first enrollment leaves no (empty) gallery
    assert cli("enroll", "ada", images[0], "--weights", ckpt, "--no-detect").code == 0
    error("enroll", "bob", images[0], "--weights", other_ckpt, "--no-detect", match="another model")
    error("verify", images[0], "--weights", other_ckpt, "--no-detect", match="another model")
    error("verify", images[0], "--claim", "zed", "--no-detect", match="'zed' is not enrolled")
    error("verify", images[0], "--detector", "hog", match="unknown --detector 'hog'")
    error("verify", tmp_path / "missing.jpg", "--no-detect", match="no such file")
    error("gallery", "remove", "zed", match="not enrolled")
    error("gallery", "export", "--out", "g.csv", match=".json or .npz")
    error("verify", images[0], "--weights", tmp_path / "nothing.pt", "--no-detect", match="no such checkpoint")


@pytest.mark.slow
def test_pretrained_default_identifies_every_probe(cli, shared_data):
    """No --weights anywhere: dlib's face ResNet. Every known photo enrolls; every probe face is
    identified (obama_and_biden: Obama, Biden and an unknown child); paintings have no face."""
    faces = shared_data / "faces"
    for person in sorted((faces / "known").iterdir()):
        r = cli("enroll", person.name, person)
        assert r.code == 0, r.stderr
    listed = json.loads(cli("gallery", "list", "--json").stdout)
    assert listed["model"]["model"] == "face-resnet" and listed["model"]["checkpoint"] == "face-resnet"
    assert {p["name"]: p["embeddings"] for p in listed["people"]} == {
        "alex_lacamoire": 1, "biden": 2, "kit_harington": 2, "obama": 2, "rose_leslie": 2}

    nst = shared_data / "nst"
    r = cli("verify", faces / "probe", nst / "starry_night.jpg", "--all-faces", "--json")
    assert r.code == 1, r.stderr  # the child and the painting are not verified
    out = {(o["image"].rsplit("/", 1)[-1], o["name"]) for o in json.loads(r.stdout)}
    assert out == {("32bit.png", "obama"), ("alex_lacamoire1.jpg", "alex_lacamoire"), ("obama3.jpg", "obama"),
                   ("obama2_exif_rotated.jpg", "obama"), ("obama_and_biden.jpg", "obama"),
                   ("obama_and_biden.jpg", "biden"), ("obama_and_biden.jpg", None), ("obama_small.jpg", "obama"),
                   ("starry_night.jpg", None)}
    results = json.loads(r.stdout)
    painting = [o for o in results if o["image"].endswith("starry_night.jpg")][0]
    assert painting["face"] is None and painting["match"] is False and painting["distance"] is None
    copies = [o["distance"] for o in results if o["image"].endswith(("32bit.png", "obama2_exif_rotated.jpg"))]
    assert copies[0] == pytest.approx(copies[1], abs=1e-3) and max(copies) < 0.1
    assert all(o["distance"] < 0.6 for o in results if o["match"])

    r = cli("verify", faces / "probe" / "obama3.jpg", "--claim", "biden")
    assert r.code == 1 and "not verified: not biden" in r.stdout
    r = cli("enroll", "vangogh", nst / "the_scream.jpg")
    assert r.code == 2 and "no face found" in r.stderr
