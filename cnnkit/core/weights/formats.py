"""Does a weights file parse completely? A download whose publisher gives no hash is kept only
when it does: the safetensors header and every tensor's byte range, a weights-only ``torch.load``,
a Darknet version header and payload. Each check returns why not ("" when it does)."""

from __future__ import annotations

from pathlib import Path

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import WeightsSpec


def parse_problem(entry: WeightsSpec, path: Path) -> str:
    """Why ``path`` does not parse completely as ``entry``'s format ("" when it does): the
    safetensors header and every tensor's byte range, a weights-only torch.load, a Darknet header
    and payload."""
    if entry.format == "safetensors":
        return safetensors_problem(path)
    if entry.format == "darknet":
        return darknet_problem(path)
    from cnnkit.core.weights.checkpoint import load_state_dict

    try:
        load_state_dict(path)
    except CnnkitError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return ""


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_problem(path: Path) -> str:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes; each
    tensor's byte range must hold its shape and dtype, and together they must tile the data."""
    import json

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "not a safetensors file (shorter than its header)"
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            return "not a safetensors file (its header length runs past the end)"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, ValueError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a table)"
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            count = 1
            for d in info["shape"]:
                count *= int(d)
            width = DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            return f"a malformed safetensors header (tensor {name})"
        if end - begin != count * width:
            return f"tensor {name} has {end - begin} bytes for {count} {info['dtype']} values"
        ranges.append((begin, end))
    ranges.sort()
    position = 0
    for begin, end in ranges:
        if begin != position:
            return "its tensors' byte ranges overlap or leave gaps"
        position = end
    if not ranges or 8 + n + position != size:
        return f"truncated or padded: the header describes {8 + n + position} bytes, the file has {size}"
    return ""


def darknet_problem(path: Path) -> str:
    """A Darknet .weights file: a version header Darknet writes, then float32 values, not all zero."""
    import numpy as np

    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    if len(head) < 20:
        return "too short for a Darknet .weights file"
    major, minor, _ = (int(v) for v in np.frombuffer(head[:12], dtype=np.int32))
    if not (major, minor) > (0, 0) or max(major, minor) > 1000:
        return f"not a Darknet .weights file (version header {major}.{minor})"
    if not np.frombuffer(head[20:len(head) // 4 * 4], dtype=np.uint8).any():
        return "not a Darknet .weights file (its values are all zero)"
    return ""
