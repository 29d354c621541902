"""Identity roots: one folder a person (``root/<name>/*.jpg``).

Training and validation use disjoint identities (verification is measured on people the model
has never seen): a stable hash of each name sends about a fifth of them to ``val``.
LFW-style ``pairs.txt`` files next to such a folder give fixed evaluation pairs.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.classification import FolderDataset, LabelledImages, scanned
from cnnkit.core.data.images import list_images
from cnnkit.core.data.splits import MissingSplit

SPLITS = ("train", "val")


def is_identity_root(path: Path) -> bool:
    if not path.is_dir() or (path / "train").is_dir():
        return False
    people = [p for p in path.iterdir() if p.is_dir()]
    return bool(people) and all(list_images(p) for p in people)


def identity_split(name: str, val_fraction: float = 0.2) -> str:
    return "val" if zlib.crc32(name.encode()) % 1000 < val_fraction * 1000 else "train"


def _val_people(people: list[str]) -> list[str]:
    """About a fifth of the people, chosen by name hash. Small sets still keep two aside (from
    four people on; verification needs impostor pairs), or one when there are two or three."""
    val = [p for p in people if identity_split(p) == "val"]
    wanted = 2 if len(people) >= 4 else min(len(people) - 1, 1)
    extra = [p for p in reversed(people) if p not in val][:max(wanted - len(val), 0)]
    return sorted(val + extra)


class IdentityDataset(FolderDataset):
    """``(image, identity)`` samples; ``classes`` are the people's names."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        people = sorted(p.name for p in root.iterdir() if p.is_dir())
        val = _val_people(people)
        chosen = val if split == "val" else [p for p in people if p not in val]
        if not chosen:
            raise CnnkitError(f"{root}: no identities for the '{split}' split")
        self.classes = chosen
        listed = [(str(img), i) for i, name in enumerate(chosen) for img in list_images(root / name)]
        if not listed:
            raise CnnkitError(f"{root}: no images of the '{split}' identities")
        self.items, self.report = scanned(root, f"identities-{split}", listed, chosen, f"identities {root} {split}")
        self.targets = [label for _, label in self.items]


def identity_dataset(source: str | Path, split: str = "train") -> IdentityDataset:
    """Train or val identities of a root (it has no test split: evaluate on a pairs file)."""
    if split not in SPLITS:
        raise MissingSplit(f"{source} has train and val identities only")
    ds = IdentityDataset(source, split)
    ds.source = f"identities {source} ({len(ds.classes)} people; val people chosen by name hash)"
    return ds


# --------------------------------------------------------------------------- LFW pairs
def _pairs_header(line: str) -> bool:
    """LFW's first line: ``10\t300`` (folds and pairs a fold) or ``500`` (pairsDevTest)."""
    parts = line.split()
    return 1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)


def _image_root(pairs_file: Path, first_name: str) -> Path | None:
    """The identity folder beside ``pairs_file`` that holds ``first_name`` (``lfw/`` in LFW)."""
    candidates = [pairs_file.parent] + sorted(p for p in pairs_file.parent.iterdir() if p.is_dir())
    return next((c for c in candidates if (c / first_name).is_dir()), None)


def is_pairs_file(path: Path) -> bool:
    """A ``.txt`` whose lines are LFW pairs, next to an identity folder (reads two lines)."""
    if not (path.is_file() and path.suffix == ".txt"):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [fh.readline(), fh.readline()]
    except (OSError, UnicodeDecodeError):
        return False
    first = lines[1] if _pairs_header(lines[0]) else lines[0]
    parts = first.split()
    return len(parts) in (3, 4) and parts[1].isdigit() and _image_root(path, parts[0]) is not None


def _lfw_image(root: Path, name: str, number: int) -> Path | None:
    folder = root / name
    path = folder / f"{name}_{number:04d}.jpg"
    if path.exists():
        return path
    return next(iter(sorted(folder.glob(f"{name}_{number:04d}.*"))), None)


class PairsDataset(LabelledImages):
    """The images named by an LFW-style pairs file, each once, as ``(image, identity)`` samples,
    with ``pairs``: (M, 3) rows ``i, j, same`` indexing them, and ``folds``: each pair's fold.

    Lines are ``name n m`` (two images of one person) or ``name1 n name2 m`` (two people); image
    ``n`` of ``name`` is ``<root>/<name>/<name>_<n:04d>.jpg``. A header ``F N`` (LFW's ``10 300``)
    says the pairs come in F folds of N genuine then N impostor pairs; without it, with one fold
    or with pairsDevTest's one-number header, ``folds`` is None."""

    def __init__(self, pairs_file: str | Path) -> None:
        pairs_file = Path(pairs_file)
        lines = pairs_file.read_text(encoding="utf-8").splitlines()
        start = 1 if lines and _pairs_header(lines[0]) else 0
        header = [int(v) for v in lines[0].split()] if start else []
        rows: list[tuple[str, int, str, int, int]] = []
        for n, line in enumerate(lines[start:], start + 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) == 3:
                    rows.append((parts[0], int(parts[1]), parts[0], int(parts[2]), 1))
                elif len(parts) == 4:
                    rows.append((parts[0], int(parts[1]), parts[2], int(parts[3]), 0))
                else:
                    raise ValueError
            except ValueError:
                raise CnnkitError(f"{pairs_file}:{n}: expected 'name n m' or 'name1 n name2 m', got {line!r}") from None
        if not rows:
            raise CnnkitError(f"{pairs_file}: no pairs")
        root = _image_root(pairs_file, rows[0][0])
        if root is None:
            raise CnnkitError(f"{pairs_file}: no folder '{rows[0][0]}' next to it (expected e.g. lfw/<name>/)")
        self.classes: list[str] = []
        self.items: list[tuple[Path, int]] = []
        index: dict[tuple[str, int], int] = {}
        pairs = []
        for n, (a, i, b, j, same) in enumerate(rows, start + 1):
            ends = []
            for name, number in ((a, i), (b, j)):
                if (name, number) not in index:
                    path = _lfw_image(root, name, number)
                    if path is None:
                        raise CnnkitError(f"{pairs_file}:{n}: image {number} of {name} not found in {root / name}")
                    if name not in self.classes:
                        self.classes.append(name)
                    index[(name, number)] = len(self.items)
                    self.items.append((path, self.classes.index(name)))
                ends.append(index[(name, number)])
            pairs.append((*ends, same))
        self.pairs = np.asarray(pairs, dtype=np.int64)
        self.targets = [label for _, label in self.items]
        self.folds: np.ndarray | None = None
        if len(header) == 2:
            folds, per_fold = header
            if folds * 2 * per_fold != len(rows):
                raise CnnkitError(f"{pairs_file}:1: the header says {folds} folds of {per_fold} genuine and "
                                  f"{per_fold} impostor pairs ({folds * 2 * per_fold}), the file has {len(rows)}")
            self.folds = np.arange(len(rows)) // (2 * per_fold) if folds > 1 else None


def pairs_dataset(source: str | Path, split: str = "val") -> PairsDataset:
    """An LFW-style pairs file: evaluation pairs only (train on an identity root)."""
    if split == "train":
        raise CnnkitError(f"{source}: a pairs file is for evaluation (`cnnkit eval CKPT --data pairs.txt`); "
                          "train on an identity root (one folder a person)")
    return PairsDataset(source)
