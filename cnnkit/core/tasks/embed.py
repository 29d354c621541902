"""The ``embed`` task: embedders trained with metric-learning losses on P x K batches
(``--loss triplet|contrastive|similarity`` or any registered ``embed`` loss), verification ROC.

Validation uses identities never seen in training: every genuine pair of the val split and as
many impostor pairs drawn at random (fixed seed), or the pairs of an LFW-style ``pairs.txt``.
The reported ``accuracy`` is held out (``protocol.py``: the threshold of the other folds applied
to each fold, LFW's own folds when its pairs file has them); the threshold kept in ``state``
(and so in the checkpoint, for ``cnnkit verify``) is the best one over all validation pairs.
Images of an identity root are embedded whole, so they should be face crops (as in LFW).
On an identity root (4+ people) evaluation also measures open-set 1:N identification as NIST
FRVT does (``openset.py``): rank-1 rate, FNIR at FPIR 1% and 0.1% and their thresholds; the DET
curve is logged with the ROC.
"""

from __future__ import annotations

from typing import Any, Iterable

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.pixels import IMAGENET, Norm, resize, to_tensor
from cnnkit.core.data.sampler import PKSampler
from cnnkit.core.metrics.distances import Scorer
from cnnkit.core.metrics.measures import Verification, verification_metrics
from cnnkit.core.metrics.openset import OpenSet, open_set
from cnnkit.core.metrics.protocol import FOLDS, best_threshold, held_out_accuracy, random_folds
from cnnkit.core.tasks import results
from cnnkit.core.tasks.base import MappedDataset, Task

MAX_GENUINE_PAIRS = 20_000


def embed_pipeline(img_size: int, train: bool, flip: bool = False) -> Any:
    """Resize to a square; in training also a small affine jitter, colour jitter and optional flips
    (an albumentations pipeline; prediction resizes with :func:`cnnkit.core.data.pixels.resize`)."""
    import albumentations as A

    steps: list[Any] = []
    if train:
        steps += [A.Affine(scale=(0.9, 1.1), rotate=(-8, 8), translate_percent=(-0.05, 0.05), p=0.5,
                           border_mode=cv2.BORDER_REFLECT_101),
                  A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)]
        if flip:
            steps.append(A.HorizontalFlip(p=0.5))
    steps.append(A.Resize(img_size, img_size))
    return A.Compose(steps)


def verification_pairs(targets: list[int], seed: int = 0) -> np.ndarray:
    """(M, 3) rows ``i, j, same``: every genuine pair (at most ``MAX_GENUINE_PAIRS``) and as many
    impostor pairs drawn at random, so that accuracy is measured on a balanced set as in LFW."""
    y = np.asarray(targets)
    i, j = np.triu_indices(len(y), 1)
    same = y[i] == y[j]
    rng = np.random.default_rng(seed)
    genuine = np.flatnonzero(same)
    impostor = np.flatnonzero(~same)
    if len(genuine) > MAX_GENUINE_PAIRS:
        genuine = rng.choice(genuine, MAX_GENUINE_PAIRS, replace=False)
    if len(genuine) == 0 or len(impostor) == 0:
        raise CnnkitError("verification needs identities with 2+ images and at least 2 identities in the val split")
    impostor = rng.choice(impostor, min(len(genuine), len(impostor)), replace=False)
    keep = np.sort(np.r_[genuine, impostor])
    return np.stack([i[keep], j[keep], same[keep]], 1).astype(np.int64)


class EmbedSample:
    """Augmentation (an albumentations ``pipeline``) and tensor conversion of one ``(image, identity)``."""

    def __init__(self, img_size: int, train: bool, flip: bool = False, norm: Norm = IMAGENET) -> None:
        self.pipeline = embed_pipeline(img_size, train, flip)
        self.norm = norm

    def __call__(self, sample: tuple[np.ndarray, int]) -> tuple[torch.Tensor, int]:
        image, identity = sample
        return to_tensor(self.pipeline(image=image)["image"], self.norm), int(identity)


class EmbedSet(MappedDataset):
    """``(image tensor, identity)`` samples with the identities (``targets``) and the
    verification ``pairs`` of the raw dataset."""

    def __init__(self, base: Any, sample: EmbedSample, seed: int = 0) -> None:
        super().__init__(base, sample, seed)
        self.targets = [int(t) for t in base.targets]
        self._pairs: np.ndarray | None = getattr(base, "pairs", None)
        self._folds: np.ndarray | None = getattr(base, "folds", None)
        self.has_identities = self._pairs is None  # an identity root (not a fixed pairs file)

    @property
    def pairs(self) -> np.ndarray:
        if self._pairs is None:
            self._pairs = verification_pairs(self.targets)
        return np.asarray(self._pairs, dtype=np.int64)

    @property
    def folds(self) -> np.ndarray:
        """The fold of each pair: the pairs file's own, else ``FOLDS`` random ones."""
        if self._folds is None:
            self._folds = random_folds(len(self.pairs), min(FOLDS, max(2, len(self.pairs) // 2)))
        return np.asarray(self._folds, dtype=np.int64)


class EmbedTask(Task):
    """Embedders (``model(images) -> (B, D)`` L2-normalised): P identities x K images a batch,
    validation on identities never seen in training. A loss whose model learns its own distance
    declares ``metric: "similarity"`` in its options."""

    # cnnkit explain: images in pairs, what makes the two close (their embeddings' cosine similarity)
    explain_kind = "pairs"

    data_tasks = ("embed",)
    default_data = "synthetic:glyphs"
    key_metric = "auc"
    key_mode = "max"
    noun = "embedder"
    run_with = "`cnnkit enroll NAME IMAGE... --weights {source}` or `cnnkit verify IMAGE... --weights {source}`"
    check_classes = False  # validation identities differ from training ones by design
    options = {"k": 4, "embedding_dim": 128, "flip": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state.setdefault("metric", self.options.get("metric", "l2"))
        self.last: tuple[np.ndarray, np.ndarray, Verification] | None = None
        self.last_open_set: OpenSet | None = None

    # ---------------------------------------------------------------- data
    def dataset(self, split: str) -> EmbedSet:
        sample = EmbedSample(self.config.img_size, split == "train", bool(self.option("flip")), self.input_norm())
        return EmbedSet(self.raw_dataset(split), sample, self.config.seed)

    def batch_sampler(self, dataset: Dataset) -> PKSampler:
        k = int(self.option("k"))
        return PKSampler(dataset.targets, p=self.config.batch_size // k, k=k, seed=self.config.seed, clock=dataset)

    # ---------------------------------------------------------------- model
    def default_loss(self) -> str:
        return self.spec.loss or "triplet"

    def build_model(self) -> nn.Module:
        model = self.spec.create(embedding_dim=int(self.option("embedding_dim")), **self.arch_options())
        if hasattr(model, "distance_threshold"):  # pretrained weights come with their own threshold
            self.state.setdefault("threshold", model.distance_threshold)
        return model

    # ---------------------------------------------------------------- evaluation
    def scorer(self, model: nn.Module) -> Scorer:
        return Scorer.from_state(self.state["metric"], {k: v.detach().cpu().numpy()
                                                        for k, v in model.state_dict().items()
                                                        if k.startswith("similarity.")})

    @torch.no_grad()
    def embeddings(self, model: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
        model.eval()
        return np.concatenate([model(images.to(device)).float().cpu().numpy() for images, _ in loader])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
        emb = self.embeddings(model, loader, device)
        pairs = loader.dataset.pairs
        distances = self.scorer(model).pairs(emb[pairs[:, 0]], emb[pairs[:, 1]])
        same = pairs[:, 2].astype(bool)
        v = verification_metrics(distances, same)
        held = held_out_accuracy(distances, same, loader.dataset.folds)
        v.threshold = self.state["threshold"] = best_threshold(distances, same)
        self.last = (distances, same, v)
        metrics = {**v.as_dict(), "accuracy": held.mean, "accuracy_std": held.std, "folds": float(len(held.accuracies)),
                   "genuine_distance": float(distances[same].mean()),
                   "impostor_distance": float(distances[~same].mean())}
        targets = np.asarray(loader.dataset.targets)
        self.last_open_set = None
        if len(np.unique(targets)) >= 4 and loader.dataset.has_identities:  # open-set needs people, not pairs
            self.last_open_set = open_set(emb, targets, self.scorer(model))
            metrics.update(self.last_open_set.metrics())
        return metrics

    def log_artifacts(self, model: nn.Module, val: Dataset, tracker: Any, device: torch.device) -> None:
        """ROC curve, genuine/impostor distance histograms, the open-set DET curve and the threshold of the
        final model."""
        self.evaluate(model, self.loader(val, train=False), device)
        self.log_evaluation(tracker, step=self.config.epochs)

    def log_evaluation(self, tracker: Any, step: int = 0) -> None:
        """The figures of the last evaluation (``cnnkit eval`` logs them too)."""
        distances, same, v = self.last
        from cnnkit.core.metrics.plots import det_figure, distance_histograms, roc_figure

        tracker.log_figure(roc_figure(v), "roc_curve.png")
        tracker.log_figure(distance_histograms(distances, same, v.threshold), "distance_histograms.png")
        if self.last_open_set is not None:
            tracker.log_figure(det_figure(self.last_open_set), "det_curve.png")
        tracker.log_metrics({"threshold": v.threshold}, step=step)
        tracker.set_tag("cnnkit.threshold", f"{v.threshold:.6f}")

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, model: nn.Module, images: Iterable[np.ndarray], device: torch.device,
                **kwargs: Any) -> list[np.ndarray]:
        """One embedding (float32, L2-normalised) per RGB uint8 image (a face crop)."""
        size = self.config.img_size
        batch = [to_tensor(resize(image, size, size), self.input_norm()) for image in images]
        if not batch:
            return []
        model.eval()
        return list(self.inference(model)(torch.stack(batch).to(device)).float().cpu().numpy())

    def result(self, image: str, pixels: Any, prediction: Any, **_: Any) -> results.Embedding:
        return results.Embedding(image, np.asarray(prediction, np.float32))

    def explain_input(self, image: np.ndarray) -> Any:
        """Resized as for prediction; the map is drawn on what the embedder saw."""
        from cnnkit.core.tasks.explaining import prepared

        pipeline = embed_pipeline(self.config.img_size, train=False)
        return prepared(lambda im: to_tensor(pipeline(image=im)["image"], self.input_norm()), image, self.input_norm())

    def export_attrs(self, model: nn.Module) -> dict[str, Any]:
        return {"embedding_dim": int(model.embedding_dim)}

    def kept_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A learned similarity head scores pairs outside the graph."""
        return {k: v for k, v in state.items() if k.startswith("similarity.")}
