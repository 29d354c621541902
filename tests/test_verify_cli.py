"""`cnnkit enroll`, `cnnkit verify` and `cnnkit gallery` end to end with a quickly trained embedder:
the point is the pipeline (detect, crop, embed, store, search, exit codes), not the accuracy."""

import json

import numpy as np
import pytest

from cnnkit.core.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.core.data.images import write_image
from cnnkit.core.data.synthetic import Glyphs
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
    out = json.loads(r.stdout)
    assert {"match", "name", "distance", "threshold"} <= set(out)
    assert out["match"] is True and out["name"] == "person0" and out["distance"] == pytest.approx(0.0, abs=1e-3)
    # 1:1: the enrolled image itself is at distance 0 from its claim
    r = cli("verify", images[1][0], "--claim", "person1", "--no-detect", "--json")
    assert r.code == 0 and json.loads(r.stdout)["name"] == "person1"
    # a threshold of 0 rejects an image that was never enrolled: exit code 1
    r = cli("verify", images[2][0], "--claim", "person0", "--no-detect", "--threshold", "0", "--json")
    assert r.code == 1 and json.loads(r.stdout)["match"] is False
    r = cli("verify", images[2][0], "--no-detect", "--threshold", "0")
    assert r.code == 1 and "not verified: closest is person" in r.stdout

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
    error("enroll", "ada", images[0], "--no-detect", match="--weights")
    error("enroll", "ada", images[0], "--weights", ckpt, match="no face found")  # a glyph is not a face
    assert json.loads(cli("gallery", "list", "--json").stdout)["people"] == []  # nothing half-stored
    assert cli("enroll", "ada", images[0], "--weights", ckpt, "--no-detect").code == 0
    error("enroll", "bob", images[0], "--weights", other_ckpt, "--no-detect", match="another model")
    error("verify", images[0], "--weights", other_ckpt, "--no-detect", match="another model")
    error("verify", images[0], "--claim", "zed", "--no-detect", match="'zed' is not enrolled")
    error("verify", tmp_path / "missing.jpg", "--no-detect", match="no such file")
    error("gallery", "remove", "zed", match="not enrolled")
    error("gallery", "export", "--out", "g.csv", match=".json or .npz")
    error("verify", images[0], "--weights", tmp_path / "nothing.pt", "--no-detect", match="no such checkpoint")


@pytest.mark.slow
def test_enroll_known_faces_and_verify_probes(cli, ckpt, shared_data):
    faces = shared_data / "faces"
    for person in sorted((faces / "known").iterdir()):
        r = cli("enroll", person.name, person, "--weights", ckpt)
        assert r.code == 0, r.stderr
    people = json.loads(cli("gallery", "list", "--json").stdout)["people"]
    assert {p["name"]: p["embeddings"] for p in people} == {
        "alex_lacamoire": 1, "biden": 2, "kit_harington": 2, "obama": 2, "rose_leslie": 2}

    for probe in sorted((faces / "probe").iterdir()):
        r = cli("verify", probe, "--json")
        assert r.code in (0, 1), r.stderr
        out = json.loads(r.stdout)
        assert out["match"] == (r.code == 0) and out["distance"] <= 2.0 + 1e-6 and out["face"] is not None
    # the EXIF-rotated and the RGBA copies of known/obama/2.jpg: the nearest enrolled face is obama's
    for name in ("obama2_exif_rotated.jpg", "32bit.png"):
        out = json.loads(cli("verify", faces / "probe" / name, "--json", "--threshold", "2.5").stdout)
        assert out["closest"] == "obama" and out["name"] == "obama", out
    r = cli("verify", faces / "probe" / "obama_and_biden.jpg", "--all-faces", "--json", "--threshold", "2.5")
    assert r.code == 0 and len(json.loads(r.stdout)) == 2
    r = cli("verify", faces / "probe" / "obama3.jpg", "--claim", "biden", "--threshold", "0")
    assert r.code == 1 and "not verified: not biden" in r.stdout
