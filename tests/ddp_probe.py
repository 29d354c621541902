"""Run by tests/test_ddp.py under ``torchrun``: ``cnnkit train ARGS`` as the command line runs it,
with the trainer recording, on each rank, which training images its loader drew each epoch and a
digest of the weights it ended with (``<out>/rank<N>.json``), so the test can compare the ranks."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from cnnkit.core.train import trainer as engine


def digest(tensors: dict[str, Any]) -> str:
    """SHA-256 of named tensors (names sorted): equal exactly when every value is."""
    out = hashlib.sha256()
    for key in sorted(tensors):
        out.update(key.encode() + tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return out.hexdigest()


class RecordingTrainer(engine.Trainer):
    """The engine's trainer; after each epoch it notes the indices its loader's sampler gave."""

    seen: list[list[int]] = []

    def train_epoch(self, run: Any, epoch: int) -> dict[str, float]:
        stats = super().train_epoch(run, epoch)
        assert self.train_loader.sampler is self.sampler  # the loader drew what this sampler gives
        RecordingTrainer.seen.append([int(i) for i in self.sampler])  # set to this epoch by train_epoch
        return stats

    def fit(self) -> Any:
        result = super().fit()
        params = dict(self.model.named_parameters())  # batch-norm statistics stay each rank's own
        record = {"rank": self.dist.rank, "seen": RecordingTrainer.seen, "keys": sorted(params),
                  "weights": digest(params)}
        Path(self.config.out, f"rank{self.dist.rank}.json").write_text(json.dumps(record))
        return result


if __name__ == "__main__":
    engine.Trainer = RecordingTrainer  # engine.fit builds its trainer from this name
    from cnnkit.commands import main

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1:])
