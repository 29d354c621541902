"""YOLO9000's WordTree: a class hierarchy with one softmax over each set of siblings.

The file format is Darknet's (``data/9k.tree``, read by ``read_tree`` in ``src/tree.c``): one
``name parent_index`` line a node, ``-1`` for a root, parents before their children. As in
Darknet, a *group* is a run of consecutive lines with the same parent, and the softmax is taken
over each group. An optional names file (``9k.names``: one display name a line, in the tree's
order) gives readable names; by default it is the tree's path with the suffix ``.names``.

- ``P(node | parent)``: the group softmax (:meth:`WordTree.log_conditionals`);
- ``P(node)``: the product of the conditionals along the path to the root (:meth:`log_absolute`);
- prediction (:meth:`WordTree.descend`): from the root, take the most probable child while the
  product of conditionals stays above a threshold; the last node taken is the answer;
- training on a label (:meth:`WordTree.path_nll`): cross-entropy in every group on the path from
  the label up to the root, so a label at an inner node teaches nothing below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from cnnkit.api import CnnkitError


class WordTree:
    def __init__(self, names: Sequence[str], parents: Sequence[int], labels: Sequence[str] | None = None) -> None:
        self.names, self.parents = list(names), [int(p) for p in parents]
        self.labels = list(labels) if labels is not None else list(self.names)
        n = len(self.names)
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise CnnkitError(f"tree node {i} ('{self.names[i]}'): parent {p} must be -1 or an earlier node")
        if len(self.labels) != n:
            raise CnnkitError(f"the names file has {len(self.labels)} lines, the tree {n} nodes")
        group, groups = [], 0
        for i, p in enumerate(self.parents):  # Darknet: a new group whenever the parent changes
            if i and p != self.parents[i - 1]:
                groups += 1
            group.append(groups)
        self.group = torch.tensor(group, dtype=torch.long)
        self.num_groups = groups + 1
        self.child_group = [-1] * n  # the group of a node's children (Darknet's ``child``)
        for i, p in enumerate(self.parents):
            if p >= 0:
                self.child_group[p] = group[i]
        depth = [0] * n
        for i, p in enumerate(self.parents):
            depth[i] = depth[p] + 1 if p >= 0 else 1
        self.depth = max(depth, default=0)
        ancestors = torch.full((n, max(self.depth, 1)), -1, dtype=torch.long)  # the node, its parent, ..., a root
        for i in range(n):
            j, k = i, 0
            while j >= 0:
                ancestors[i, k], j, k = j, self.parents[j], k + 1
        self.ancestors = ancestors

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def read(cls, path: str | Path, names: str | Path | None = None) -> "WordTree":
        """A tree from Darknet's ``name parent`` lines (and display names, if a names file is given
        or lies beside the tree as ``<stem>.names``)."""
        path = Path(path)
        try:
            numbered = [(n, line.split()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CnnkitError(f"{path}: unreadable tree file ({exc.__class__.__name__})") from None
        first: dict[str, int] = {}
        for number, parts in numbered:
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise CnnkitError(f"{path}:{number}: expected 'name parent_index', got '{' '.join(parts)}'")
            if parts[0] in first:  # Darknet would keep both; every label would go to the later one
                raise CnnkitError(f"{path}:{number}: node '{parts[0]}' is already named on line {first[parts[0]]}; "
                                  "each node needs a name of its own")
            first[parts[0]] = number
        lines = [parts for _, parts in numbered]
        labels = None
        names_path = Path(names) if names is not None else path.with_suffix(".names")
        if names is not None or names_path.is_file():
            try:
                labels = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise CnnkitError(f"{names_path}: unreadable names file ({exc.__class__.__name__})") from None
        try:
            return cls([p[0] for p in lines], [int(p[1]) for p in lines], labels)
        except CnnkitError as exc:
            raise CnnkitError(f"{path}: {exc}") from None

    def index(self, name: str) -> int:
        """The node called ``name`` (its tree name or its display name)."""
        lookup = getattr(self, "_lookup", None)
        if lookup is None:
            lookup = {}
            for i, label in enumerate(self.labels):  # a display name may be shared (WordNet's two 'crane's)
                lookup.setdefault(label, []).append(i)
            lookup |= {n: [i] for i, n in enumerate(self.names)}  # tree names are unique (:meth:`read`) and win
            self._lookup = lookup
        if name not in lookup:
            raise CnnkitError(f"class '{name}' is not a node of the tree")
        if len(lookup[name]) > 1:
            nodes = ", ".join(self.names[i] for i in lookup[name])
            raise CnnkitError(f"class '{name}' is the display name of several nodes ({nodes}); use the tree name")
        return lookup[name][0]

    # ---------------------------------------------------------------- probabilities
    def log_conditionals(self, logits: torch.Tensor) -> torch.Tensor:
        """``log P(node | parent)`` from ``(..., n)`` logits: a log-softmax over each group."""
        g = self.group.to(logits.device).expand_as(logits)
        shape = (*logits.shape[:-1], self.num_groups)
        top = logits.new_full(shape, float("-inf")).scatter_reduce(-1, g, logits.detach(), "amax")
        shifted = logits - top.gather(-1, g)
        total = logits.new_zeros(shape).scatter_add(-1, g, shifted.exp())
        return shifted - total.log().gather(-1, g)

    def _along_path(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` (..., n) over each node's path to the root."""
        anc = self.ancestors.to(values.device)
        picked = values[..., anc.clamp(min=0)]  # (..., n, depth)
        return picked.masked_fill(anc < 0, 0).sum(-1)

    def log_absolute(self, logits: torch.Tensor) -> torch.Tensor:
        """``log P(node)``: the log conditionals summed along each node's path to its root."""
        return self._along_path(self.log_conditionals(logits))

    def path_nll(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``-log P(label)`` for rows of ``logits`` (M, n) and ``labels`` (M,): cross-entropy in
        each group from the label up to the root (Darknet's ``delta_region_class`` with a tree)."""
        logc = self.log_conditionals(logits)
        anc = self.ancestors.to(logits.device)[labels]  # (M, depth)
        picked = logc.gather(1, anc.clamp(min=0))
        return -picked.masked_fill(anc < 0, 0).sum(1)

    def descend(self, logits: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """The deepest confident node for each row of ``logits`` (P, n) and its probability:
        from the root group, take the most probable child while the product of conditionals
        stays above ``threshold`` (at the root the best node is taken whatever its probability,
        as Darknet's ``hierarchy_top_prediction`` does)."""
        cond = self.log_conditionals(logits).exp()
        group = torch.zeros(len(cond), dtype=torch.long, device=cond.device)
        node = torch.full((len(cond),), -1, dtype=torch.long, device=cond.device)
        prob = torch.ones(len(cond), device=cond.device)
        active = torch.ones(len(cond), dtype=torch.bool, device=cond.device)
        g = self.group.to(cond.device)
        child = torch.tensor(self.child_group, dtype=torch.long, device=cond.device)
        for _ in range(self.depth):
            masked = cond.masked_fill(g[None, :] != group[:, None], -1.0)
            best_p, best = masked.max(1)
            take = active & ((prob * best_p > threshold) | (node < 0))
            node = torch.where(take, best, node)
            prob = torch.where(take, prob * best_p, prob)
            group = torch.where(take, child[best], group)
            active = take & (group >= 0)
            if not active.any():
                break
        return node, prob

