"""JSON as the commands print it: strict JSON (RFC 8259), so a NaN or infinite number prints as
``null``, never as the bare ``NaN`` that JSON parsers refuse. Imports nothing heavy."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` (dicts, lists, tuples of them) with every non-finite float replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON; what JSON has no type for (a path) as its text."""
    return json.dumps(finite(value), indent=indent, default=str, allow_nan=False)
