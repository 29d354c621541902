"""Maps that can be trusted (tests that can fail): small models trained on synthetic images with one
object of known box. The pointing game (the map's peak inside the true box) must beat a uniformly
random point by a margin; the maps of the trained network and of the same network re-initialised
must differ (Spearman rho below ``RANK_BOUND``, Adebayo et al. 2018); a classifier trained on
shuffled labels must point no better than chance allows. bench/explain.py prints the full table
(every method, more images, longer training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from cnnkit.core.explain.sanity import RANK_BOUND, Sample, chance, maps, pointing, rank_correlation, reinitialised

IMAGES = 32
MARGIN = 0.08  # the trained network's pointing share must beat a random point's by this much (bench/explain.py,
# 32 images: gradcam on the 8-epoch resnet18 0.28 against 0.17 for a random point, 0.16 re-initialised, 0.09 shuffled)


def _train(out: Path, model: str, data: str, *flags: str) -> tuple:
    from cnnkit.core.load.source import load_for_eval

    r = run_cli("train", model, "--data", data, *flags, "--no-track", "--workers", 0, "--seed", 0, "--out", out)
    assert r.code == 0, r.stderr
    return load_for_eval(out / "weights" / "best.pt")[:2]


def _figures() -> list[Sample]:
    from cnnkit.plugins.yolo.synthetic import FigureCrops

    ds = FigureCrops("val", n=4 * IMAGES, size=64)
    return [Sample(image, box, label) for image, label, box in (ds.with_box(i) for i in range(IMAGES))]


def _shapes() -> list[Sample]:
    from cnnkit.core.data.synthetic import Shapes

    ds = Shapes("val", n=8 * IMAGES, size=96, max_objects=1)
    found = [ds[i] for i in range(len(ds))]
    return [Sample(s.image, s.boxes[0].tolist(), int(s.labels[0])) for s in found if len(s.boxes)][:IMAGES]


CLASSIFIER = ("resnet18", "synthetic:figure-crops?n=512&size=64", "--img-size", "64", "--batch-size", "32",
              "--epochs", "8")


@pytest.mark.slow
def test_classifier_maps_point_at_the_figure_and_not_when_untrained_or_shuffled(tmp_path):
    model, data, *flags = CLASSIFIER
    task, net = _train(tmp_path / "trained", model, data, *flags)
    samples = _figures()
    trained = maps(task, net, samples, "gradcam", layer="layer3")
    random = maps(task, reinitialised(task), samples, "gradcam", layer="layer3")
    share, floor = pointing(trained, samples), chance(samples)
    assert share >= floor + MARGIN, (share, floor)
    assert rank_correlation(trained, random) < RANK_BOUND
    shuffled_task, shuffled = _train(tmp_path / "shuffled", model, data + "&shuffle_labels=1", *flags)
    assert pointing(maps(shuffled_task, shuffled, samples, "gradcam", layer="layer3"), samples) < share


@pytest.mark.slow
@pytest.mark.parametrize("model,flags", [
    ("yolov3-tiny", ("--img-size", "96", "--batch-size", "16", "--epochs", "10", "--no-multi-scale")),
    ("faster-rcnn", ("--img-size", "96", "--batch-size", "8", "--epochs", "8")),
])
def test_detector_maps_point_at_the_object_and_change_when_untrained(tmp_path, model, flags):
    task, net = _train(tmp_path / "trained", model, "synthetic:shapes?n=512&size=96&max_objects=1", *flags)
    samples = _shapes()
    trained = maps(task, net, samples, "gradcam")
    random = maps(task, reinitialised(task), samples, "gradcam")
    assert pointing(trained, samples) >= chance(samples) + MARGIN, (pointing(trained, samples), chance(samples))
    assert rank_correlation(trained, random) < RANK_BOUND


def test_refusals_follow_the_randomisation_check():
    """A method a family refuses says why, and only the checks' failures are refusals."""
    from cnnkit.core.explain import METHODS
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models, resolve, tasks

    load_plugins()
    for name, spec in models.items():
        cls = resolve(spec.task_class) if spec.task_class else resolve(tasks.get(spec.task).build)
        for method, why in cls.explain_refused.items():
            assert method in METHODS and len(why) > 20, (name, method)
