"""Open-set 1:N identification (NIST FRVT's rank-1, FNIR at FPIR) on sets with known answers."""

import json

import numpy as np
import pytest

from cnnkit.core.data.images import write_image
from cnnkit.core.metrics.distances import Scorer
from cnnkit.core.metrics.openset import open_set, split_identities
from tests.conftest import run_cli


def _point(x):
    return [x, 0.0]


def test_rank1_and_fnir_at_fpir_on_a_known_set():
    """Enrolled people 0, 2, 4 (first image each at x = 0, 10, 20); mated probes at known distances,
    one closer to the wrong person; 200 non-mated probes, three of them close to someone."""
    rows = [(0, 0.0), (2, 10.0), (4, 20.0)]  # the gallery: each person's first row
    rows += [(0, 0.1), (0, 0.2), (0, 0.3), (0, 6.0), (2, 10.5), (2, 11.0), (4, 20.9)]  # mated
    rows += [(1, 20.25), (3, 10.6), (5, -0.95)] + [(1 + 2 * (i % 3), 40.0 + i) for i in range(197)]  # non-mated
    targets = np.array([t for t, _ in rows])
    emb = np.array([_point(x) for _, x in rows], np.float32)
    gallery, mated, nonmated = split_identities(targets)
    assert list(gallery) == [0, 1, 2] and list(mated) == list(range(3, 10)) and len(nonmated) == 200
    result = open_set(emb, targets, Scorer("l2"))
    m = result.metrics()
    assert m["rank1"] == pytest.approx(6 / 7)  # the probe at x = 6 is closer to person 2
    assert m["mated_searches"] == 7 and m["nonmated_searches"] == 200
    # FPIR <= 1%: two false positives allowed (0.25 and 0.6), the threshold sits below 0.95
    assert m["threshold_at_fpir_1pct"] == pytest.approx(0.95, abs=1e-3) and m["threshold_at_fpir_1pct"] < 0.95
    assert m["fnir_at_fpir_1pct"] == pytest.approx(2 / 7)  # the wrong one and the mate at 1.0
    # FPIR <= 0.1%: no false positive: below 0.25, only the mates at 0.1 and 0.2 are found
    assert m["threshold_at_fpir_0_1pct"] == pytest.approx(0.25, abs=1e-3)
    assert m["fnir_at_fpir_0_1pct"] == pytest.approx(5 / 7)
    fpir, fnir = result.det()
    assert fpir[0] == 0 and fpir[-1] == 1 and fnir[-1] == pytest.approx(1 / 7)
    assert np.all(np.diff(fpir) >= 0) and np.all(np.diff(fnir) <= 0)


def test_cnnkit_eval_reports_open_set_identification(tmp_path):
    """An identity root where each person's photos are copies of one image: every mated search
    finds its mate at distance 0 (rank-1 1.0, FNIR 0 at either FPIR) whatever the embedder; the
    run in MLflow holds the metrics and the DET curve."""
    import mlflow

    r = run_cli("train", "siamese-small", "--data", "synthetic:glyphs?ids=8&per_id=4", "--epochs", "1",
                "--batch-size", "16", "--img-size", "32", "--out", tmp_path / "run", "--no-track")
    assert r.code == 0, r.stderr
    rng = np.random.default_rng(0)
    root = tmp_path / "people"
    for p in range(30):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        for i in range(3):
            write_image(root / f"person{p:02d}" / f"{i}.png", image)
    r = run_cli("eval", tmp_path / "run" / "weights" / "best.pt", "--data", root, "--json", "--track")
    assert r.code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["rank1"] == 1.0 and m["fnir_at_fpir_1pct"] == 0.0 and m["fnir_at_fpir_0_1pct"] == 0.0
    assert m["mated_searches"] >= 2 and m["nonmated_searches"] >= 2 * 3
    assert 0 < m["threshold_at_fpir_1pct"] == m["threshold_at_fpir_0_1pct"]  # < 1/FPIR non-mated: none allowed
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.metrics["val_rank1"] == 1.0 and run.data.metrics["val_fnir_at_fpir_1pct"] == 0.0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"det_curve.png", "roc_curve.png"} <= artifacts
