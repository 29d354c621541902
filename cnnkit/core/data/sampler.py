"""P identities x K images per batch, so every anchor has positives and negatives to mine."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from cnnkit.core.base.errors import CnnkitError


class PKSampler(Sampler[list[int]]):
    """Batches of ``p`` identities with ``k`` images each (drawn with replacement when an identity
    has fewer than ``k``). Identities with a single image cannot give a positive pair and are
    left out. Deterministic: epoch ``e`` draws from ``(seed, e)``, where ``e`` is ``clock.epoch``
    (the training dataset, whose epoch the engine sets, so ``--resume`` continues exactly) or,
    without a clock, the number of earlier iterations."""

    def __init__(self, targets: Sequence[int], p: int, k: int, seed: int = 0, batches: int | None = None,
                 clock: Any = None) -> None:
        groups: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(targets):
            groups[int(label)].append(index)
        self.groups = [idx for _, idx in sorted(groups.items()) if len(idx) >= 2]
        if len(self.groups) < 2:
            raise CnnkitError("triplet training needs at least 2 identities with 2 or more images each "
                              f"(found {len(self.groups)})")
        self.p, self.k, self.seed = min(max(int(p), 2), len(self.groups)), max(int(k), 2), int(seed)
        usable = sum(len(g) for g in self.groups)
        self.batches = batches or max(usable // (self.p * self.k), 1)
        self.clock, self.iterations = clock, 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch = getattr(self.clock, "epoch", self.iterations)
        self.iterations += 1
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.batches):
            batch: list[int] = []
            for g in rng.choice(len(self.groups), size=self.p, replace=False):
                group = self.groups[g]
                batch += rng.choice(group, size=self.k, replace=len(group) < self.k).tolist()
            yield batch
