"""Darknet ``.cfg`` text without torch: the ``[section]`` blocks, their values read with the
``file:line`` they come from (every malformed value is one line naming it), and what a file says
about itself -- its input size, classes, head family and the loss settings of its head -- so a
.cfg given by path is built and trained as written."""

from __future__ import annotations

from pathlib import Path

from cnnkit.api import CnnkitError

Section = dict[str, str]
HEADS = {"yolo": "yolov3", "region": "yolov2", "detection": "yolov1"}  # head section -> family (its loss)
# The loss settings Darknet reads from a head section (parse_yolo, parse_region, parse_detection).
HEAD_SETTINGS = ("ignore_thresh", "truth_thresh", "object_scale", "noobject_scale", "class_scale", "coord_scale",
                 "rescore", "thresh", "jitter")
MAX_SIDE = 8192  # largest input side, layer width or kernel accepted (sizes are checked before allocating)
MAX_CHANNELS = 1 << 16


def parse_cfg(path: str | Path) -> list[Section]:
    """The ``[section]`` blocks of a Darknet .cfg as dicts (``type`` holds the section name,
    ``line`` its line, ``file`` the path)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: unreadable .cfg ({exc.__class__.__name__})") from None
    sections: list[Section] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise CnnkitError(f"{path}:{number}: unclosed section header '{line}'")
            sections.append({"type": line[1:-1].strip().lower(), "line": str(number), "file": str(path)})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise CnnkitError(f"{path}:{number}: expected '[section]' or 'key=value', got '{line}'")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise CnnkitError(f"{path}: a Darknet .cfg starts with a [net] section")
    return sections


def where(s: Section) -> str:
    """``file:line [section]`` of a section, for messages."""
    return f"{s.get('file', '.cfg')}:{s['line']} [{s['type']}]"


def get_int(s: Section, key: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int:
    """An integer value of section ``s`` (``default`` when absent; required when ``default`` is None),
    within ``lo..hi``."""
    if key not in s:
        if default is None:
            raise CnnkitError(f"{where(s)}: needs {key}=")
        return default
    try:
        value = int(s[key])
    except ValueError:
        raise CnnkitError(f"{where(s)}: {key}={s[key]} is not an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise CnnkitError(f"{where(s)}: {key}={value} must be {bounds}")
    return value


def get_float(s: Section, key: str, default: float) -> float:
    """A number value of section ``s`` (``default`` when absent)."""
    try:
        return float(s.get(key, default))
    except ValueError:
        raise CnnkitError(f"{where(s)}: {key}={s[key]} is not a number") from None


def get_ints(s: Section, key: str) -> list[int]:
    """A required comma-separated list of integers."""
    if key not in s:
        raise CnnkitError(f"{where(s)}: needs {key}=")
    try:
        return [int(v) for v in s[key].split(",") if v.strip()]
    except ValueError:
        raise CnnkitError(f"{where(s)}: {key}={s[key]} is not a list of integers") from None


def get_anchors(s: Section, count: int | None = None) -> list[float]:
    """The head's ``anchors=`` (positive numbers in w, h pairs; ``count`` pairs when given)."""
    try:
        values = [float(v) for v in s.get("anchors", "").split(",") if v.strip()]
    except ValueError:
        raise CnnkitError(f"{where(s)}: anchors={s['anchors']} are not numbers") from None
    if not values or len(values) % 2 or min(values) <= 0:
        raise CnnkitError(f"{where(s)}: anchors= must be positive w,h pairs (got {len(values)} values)")
    if count is not None and len(values) != 2 * count:
        raise CnnkitError(f"{where(s)}: num={count} needs {count} anchor pairs, the file gives {len(values) // 2}")
    return values


def net_size(net: Section) -> tuple[int, int]:
    """``[net]`` height and width (416 when absent), checked."""
    return (get_int(net, "height", 416, 1, MAX_SIDE), get_int(net, "width", 416, 1, MAX_SIDE))


def head_settings(s: Section) -> dict[str, float]:
    """The loss settings a head section sets (only those it sets)."""
    return {key: get_float(s, key, 0.0) for key in HEAD_SETTINGS if key in s}


def describe(path: str | Path) -> dict[str, object]:
    """What a .cfg says about itself: ``img_size`` (its [net] width), ``num_classes`` and ``family``
    of its first head ("classify" without one), ``settings`` (its head's loss settings) and
    ``multi_scale``: its last head's ``random=`` (0 when absent), which Darknet's ``train_detector``
    reads from the network's last layer to resize the input every 10 batches."""
    sections = parse_cfg(path)
    heads = [s for s in sections if s["type"] in HEADS]
    height, width = net_size(sections[0])
    if not heads:  # a classifier: its classes are the outputs of its last weighted layer
        outputs = [get_int(s, "filters" if s["type"] == "convolutional" else "output", 1, 1)
                   for s in sections if s["type"] in ("convolutional", "connected")]
        return {"img_size": width, "num_classes": outputs[-1] if outputs else 0, "family": "classify", "settings": {},
                "multi_scale": False}
    head = heads[0]
    return {"img_size": width, "num_classes": get_int(head, "classes", 20, 1),
            "family": HEADS[head["type"]], "settings": head_settings(head),
            "multi_scale": get_int(heads[-1], "random", 0, 0) != 0}
