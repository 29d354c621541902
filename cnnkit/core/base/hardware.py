"""What the machine offers, told without importing torch."""

from __future__ import annotations

import ctypes
import platform
import sys


def gpu_present() -> bool:
    """Whether torch's ``auto`` device would be a GPU: an NVIDIA driver that sees a device (it
    honours ``CUDA_VISIBLE_DEVICES``), or Apple silicon (MPS). Reads the driver, not torch."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
