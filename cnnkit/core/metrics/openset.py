"""Open-set 1:N identification, measured as NIST FRVT 1:N does.

The evaluation identities are split in two (sorted by name, alternately): *enrolled* people put
their first image in the gallery and the rest are *mated* probes; the others, never enrolled, give
*non-mated* probes. Every probe is searched against the gallery (rank 1 = the closest enrolled
person). At a distance threshold T:

- FPIR(T): the fraction of non-mated searches that return anyone (rank-1 distance <= T);
- FNIR(T): the fraction of mated searches whose rank-1 answer is not their mate or is above T.

FNIR is reported at the largest T whose FPIR is at most 1% and 0.1% (with that T), and the
rank-1 identification rate (closed-set: the mate is the closest, whatever the distance). With
fewer than 1/FPIR non-mated searches, FPIR <= target can only mean no false positive at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.metrics.distances import Scorer

FPIR_TARGETS = (0.01, 0.001)


@dataclass
class OpenSet:
    """Rank-1 distances and correctness of the mated searches, rank-1 distances of the non-mated."""

    mated_distance: np.ndarray
    mated_correct: np.ndarray  # rank-1 identity is the mate
    nonmated_distance: np.ndarray

    def fpir(self, t: float | np.ndarray) -> np.ndarray:
        return (self.nonmated_distance[None, :] <= np.atleast_1d(t)[:, None]).mean(1)

    def fnir(self, t: float | np.ndarray) -> np.ndarray:
        hit = self.mated_correct[None, :] & (self.mated_distance[None, :] <= np.atleast_1d(t)[:, None])
        return 1.0 - hit.mean(1)

    def threshold_at(self, target: float) -> float:
        """The largest threshold whose FPIR is at most ``target``."""
        nm = np.sort(self.nonmated_distance)
        allowed = int(np.floor(target * len(nm) + 1e-9))
        return float(np.nextafter(nm[allowed], -np.inf)) if allowed < len(nm) else float(nm[-1])

    def metrics(self) -> dict[str, float]:
        out = {"rank1": float(self.mated_correct.mean()), "mated_searches": float(len(self.mated_distance)),
               "nonmated_searches": float(len(self.nonmated_distance))}
        for target in FPIR_TARGETS:
            t = self.threshold_at(target)
            key = f"{target * 100:g}".replace(".", "_")
            out[f"fnir_at_fpir_{key}pct"] = float(self.fnir(t)[0])
            out[f"threshold_at_fpir_{key}pct"] = t
        return out

    def det(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPIR, FNIR) over every threshold that changes either: the DET curve."""
        t = np.unique(np.r_[self.mated_distance, self.nonmated_distance])
        return self.fpir(t), self.fnir(t)


def split_identities(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of (gallery, mated probes, non-mated probes): identities alternately enrolled
    or not (in label order), each enrolled one's first row in the gallery."""
    targets = np.asarray(targets)
    people = np.unique(targets)
    enrolled = people[::2]
    rows = np.arange(len(targets))
    is_enrolled = np.isin(targets, enrolled)
    first = np.zeros(len(targets), bool)
    first[np.unique(targets, return_index=True)[1]] = True
    gallery = rows[is_enrolled & first]
    return gallery, rows[is_enrolled & ~first], rows[~is_enrolled]


def open_set(embeddings: np.ndarray, targets: np.ndarray, scorer: Scorer) -> OpenSet:
    """Open-set identification of ``embeddings`` (N, D) of people ``targets`` (see the module doc)."""
    targets = np.asarray(targets)
    gallery, mated, nonmated = split_identities(targets)
    if len(mated) == 0 or len(nonmated) == 0:
        raise CnnkitError("open-set identification needs 2+ people with 2+ images and people never enrolled "
                          "(at least 2 identities in the evaluation split)")
    g = embeddings[gallery]

    def rank1(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.stack([scorer.search(embeddings[r], g) for r in rows])
        best = d.argmin(1)
        return d[np.arange(len(rows)), best], targets[gallery][best]

    mated_d, mated_who = rank1(mated)
    nonmated_d, _ = rank1(nonmated)
    return OpenSet(mated_d, mated_who == targets[mated], nonmated_d)
