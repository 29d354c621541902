"""Device choice, mixed precision, seeding and DistributedDataParallel setup."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from cnnkit.core.base.errors import CnnkitError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA > MPS > CPU; ``cpu``, ``cuda``, ``cuda:i`` and ``mps`` are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnkitError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CnnkitError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CnnkitError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CnnkitError("--device mps: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CnnkitError(f"unsupported device '{name}'")
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device supports it, else fp16 (which then needs a GradScaler)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" else torch.float16


@dataclass
class Precision:
    """Autocast settings for a run; ``scaler`` is enabled only for fp16."""

    device: torch.device
    enabled: bool

    def __post_init__(self) -> None:
        self.dtype = amp_dtype(self.device)
        fp16 = self.enabled and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled):
            yield


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Distributed:
    """Where this process stands in a ``torchrun`` launch (world 1 when not launched so)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network itself under DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None)
        if inner is None:
            return model
        model = inner


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    info = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), world)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info
