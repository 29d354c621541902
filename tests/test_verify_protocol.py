"""The verification threshold is chosen on other pairs than those it is scored on (LFW's 10-fold
protocol), and the pretrained face-resnet is evaluated that way on real faces."""

import json

import numpy as np
import pytest

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.identities import PairsDataset
from cnnkit.core.data.images import read_image, write_image
from cnnkit.core.metrics.protocol import best_threshold, held_out_accuracy, random_folds


def test_held_out_accuracy_never_scores_a_threshold_on_its_own_fold():
    # every fold alone is perfect at some threshold (accuracy 1 when chosen on the same pairs)
    d = np.array([0.4, 0.6, 0.1, 0.3, 0.2, 0.35])
    same = np.array([1, 0, 1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1, 2, 2])
    held = held_out_accuracy(d, same, folds)
    # fold 0: folds 1+2 are best between 0.2 and 0.3, which rejects its genuine 0.4;
    # fold 1: folds 0+2 tie at 3 of 4 below 0.35 and below 0.6: the first gap, 0.2 to 0.35;
    # fold 2: folds 0+1 likewise between 0.1 and 0.3
    assert held.thresholds.tolist() == pytest.approx([0.25, 0.275, 0.2])
    assert held.accuracies.tolist() == [0.5, 1.0, 1.0]
    assert held.mean == pytest.approx(2.5 / 3) and held.std == pytest.approx(np.std([0.5, 1, 1]))
    assert best_threshold(d, same) == pytest.approx(0.25)  # all pairs: 5 of 6 right between 0.2 and 0.3
    with pytest.raises(CnnkitError, match="two folds"):
        held_out_accuracy(d, same, np.zeros(6, int))
    f = random_folds(25, 10)
    assert sorted(np.bincount(f).tolist()) == [2] * 5 + [3] * 5 and f.tolist() == random_folds(25, 10).tolist()


def _lfw(root, people, pairs_lines, header):
    rng = np.random.default_rng(0)
    for name, count in people.items():
        for i in range(1, count + 1):
            write_image(root / "lfw" / name / f"{name}_{i:04d}.jpg", rng.integers(0, 255, (8, 8, 3), np.uint8))
    (root / "pairs.txt").write_text("\n".join([header, *pairs_lines]) + "\n")
    return root / "pairs.txt"


def test_pairs_file_keeps_its_fold_headers(tmp_path):
    lines = ["ann 1 2", "bob 1 2", "ann 1 bob 2", "bob 1 ann 2",  # fold 0: 2 genuine, 2 impostor
             "ann 2 3", "bob 2 3", "ann 3 bob 1", "bob 3 ann 1"]  # fold 1
    pairs = _lfw(tmp_path, {"ann": 3, "bob": 3}, lines, "2\t2")
    ds = PairsDataset(pairs)
    assert ds.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ds.pairs[:, 2].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    pairs.write_text("3\t2\n" + "\n".join(lines) + "\n")
    with pytest.raises(CnnkitError, match="pairs.txt:1: the header says 3 folds.*the file has 8"):
        PairsDataset(pairs)
    pairs.write_text("\n".join(lines) + "\n")
    assert PairsDataset(pairs).folds is None


@pytest.mark.slow
def test_eval_pretrained_face_resnet_on_an_lfw_style_pairs_file(cli, shared_data, tmp_path):
    """Aligned chips of the shared photos laid out as LFW (two folds), then `cnnkit eval face-resnet`."""
    from cnnkit.plugins.siamese.faces import face_chips

    faces = shared_data / "faces"
    sources = {"obama": ["known/obama/1.jpg", "known/obama/2.jpg", "probe/obama3.jpg", "probe/obama_small.jpg"],
               "biden": ["known/biden/1.jpg", "known/biden/2.jpg"],
               "kit": ["known/kit_harington/1.jpg", "known/kit_harington/2.jpg"],
               "rose": ["known/rose_leslie/1.jpg", "known/rose_leslie/2.jpg"]}
    for name, files in sources.items():
        for i, f in enumerate(files, 1):
            chip, _ = face_chips(read_image(faces / f))[0]
            write_image(tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg", chip)
    lines = ["obama 1 2", "biden 1 2", "kit 1 2", "obama 1 biden 1", "kit 1 rose 1", "obama 2 kit 2",
             "obama 3 4", "rose 1 2", "obama 2 3", "biden 2 rose 2", "obama 4 biden 2", "kit 2 rose 1"]
    (tmp_path / "pairs.txt").write_text("2\t3\n" + "\n".join(lines) + "\n")
    r = cli("eval", "face-resnet", "--data", tmp_path / "pairs.txt", "--json")
    assert r.code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["folds"] == 2 and metrics["accuracy"] == 1.0 and metrics["accuracy_std"] == 0.0
    assert metrics["auc"] == 1.0 and metrics["genuine_distance"] < 0.45 < metrics["impostor_distance"]
