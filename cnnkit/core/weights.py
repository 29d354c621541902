"""Published weights on demand: find a registered file in torch's cache
(``$TORCH_HOME/hub/checkpoints``) or download it there, hash-checked, and load it into a model.

A download goes to a temporary file next to its final place and is moved there only once its
SHA-256 (or torchvision's hash prefix) matches. Every failure is one :class:`CnnkitError` line:
the URL and the cache path where the file can be put by hand on an offline machine.
``CNNKIT_WEIGHTS_MIRROR=URL`` fetches every file from ``URL/<file name>`` instead of its home.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cnnkit.core.atomic import atomic_path
from cnnkit.core.errors import CnnkitError
from cnnkit.core.registry import ModelSpec, WeightsSpec, models, resolve, weights

MIRROR = "CNNKIT_WEIGHTS_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 30


def cache_dir() -> Path:
    """torch's checkpoint cache: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(entry: WeightsSpec) -> Path:
    return cache_dir() / entry.file


def source_url(entry: WeightsSpec) -> str:
    """The publisher's URL, or ``$CNNKIT_WEIGHTS_MIRROR/<file>``."""
    mirror = os.environ.get(MIRROR, "").strip()
    return f"{mirror.rstrip('/')}/{entry.file}" if mirror else entry.url


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check(entry: WeightsSpec, digest: str, size: int) -> str:
    """Why a file with this SHA-256 and size is not ``entry``'s file ("" when it is)."""
    if entry.sha256 and digest != entry.sha256:
        return f"SHA-256 mismatch (expected {entry.sha256}, got {digest})"
    if entry.hash_prefix and not digest.startswith(entry.hash_prefix):
        return f"SHA-256 mismatch (expected {entry.hash_prefix}..., got {digest})"
    if not (entry.sha256 or entry.hash_prefix) and entry.size and size != entry.size:
        return f"size mismatch (expected {entry.size} bytes, got {size})"
    return ""


def fetch(entry: WeightsSpec) -> Path:
    """``entry``'s file in the cache, downloaded first if it is not there yet."""
    target = cache_path(entry)
    if target.is_file():
        return target
    url = source_url(entry)
    by_hand = f"put {entry.file} at {target} by hand (or set {MIRROR}=URL)"
    try:
        with atomic_path(target) as tmp:
            digest, size = _download(url, tmp, entry)
            problem = check(entry, digest, size)
            if problem:
                raise CnnkitError(f"{entry.file}: {problem}; the download from {url} was discarded")
    except urllib.error.HTTPError as exc:
        raise CnnkitError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); {by_hand}") from None
    except urllib.error.URLError as exc:
        raise CnnkitError(f"cannot download {url} ({_reason(exc.reason)}); {by_hand}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed mirror URL, a full disk
        raise CnnkitError(f"cannot download {url} ({_reason(exc)}); {by_hand}") from None
    if not (entry.sha256 or entry.hash_prefix):
        print(f"warning: {entry.file}: its publisher gives no hash; kept unverified", file=sys.stderr)
    return target


def _reason(exc: Any) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _download(url: str, tmp: Path, entry: WeightsSpec) -> tuple[str, int]:
    """Stream ``url`` into ``tmp`` under a rich progress bar (on stderr); returns (SHA-256, bytes)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    digest, size = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "cnnkit"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or entry.size
        columns = (TextColumn(entry.file), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            bar = progress.add_task("download", total=total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.advance(bar, len(chunk))
    return digest.hexdigest(), size


# ------------------------------------------------------------------------- which file, which variant
def for_model(name: str) -> list[WeightsSpec]:
    """The registered weights for model ``name`` (its aliases count), in registration order."""
    spec = models.get(name)
    names = {spec.name, *spec.aliases}
    return [w for _, w in weights.items() if w.model in names]


def pretrained_entry(spec: ModelSpec, options: dict[str, Any]) -> WeightsSpec:
    """The weights ``--pretrained`` starts ``spec`` from: its own, else its backbone's (see
    :func:`use_variant` for ``options``)."""
    found = for_model(spec.name)
    backbone = options.get("backbone") or spec.build_kwargs.get("backbone")
    if not found and isinstance(backbone, str) and backbone in models:
        inner = models.get(backbone)
        return pretrained_entry(inner, dict(inner.options))  # the backbone is built with its defaults
    if not found:
        raise CnnkitError(f"{spec.name} has no published weights in the registry (see `cnnkit weights list`); "
                          "use --weights PATH")
    problems = []
    for entry in found:
        try:
            return use_variant(entry, spec, options)
        except CnnkitError as exc:
            problems.append(str(exc))
    raise CnnkitError(problems[0])


def use_variant(entry: WeightsSpec, spec: ModelSpec, options: dict[str, Any]) -> WeightsSpec:
    """Write the architecture options ``entry`` was trained with into ``options`` (the user's
    choices). Weights that fit no variant of ``spec``, or a choice that contradicts them, are
    refused: never loaded into the wrong wiring."""
    if entry.model not in (spec.name, *spec.aliases):
        return entry  # a backbone's weights, or a file the family reads itself
    if entry.mismatch:
        raise CnnkitError(f"the published {entry.name} weights ({entry.variant}) do not fit cnnkit's {spec.name}: "
                          f"{entry.mismatch}")
    unknown = set(entry.options) - set(spec.options)
    if unknown:
        raise CnnkitError(f"{entry.name}: {spec.name} has no option(s) {', '.join(sorted(unknown))}")
    clash = {k: v for k, v in entry.options.items() if k in options and options[k] != v}
    if clash:
        wanted = ", ".join(f"--{k.replace('_', '-')} {str(v).lower() if isinstance(v, bool) else v}"
                           for k, v in clash.items())
        raise CnnkitError(f"{entry.name} weights were trained for {entry.variant}: they need {wanted}; "
                          "drop the conflicting option or do without them")
    options.update(entry.options)
    return entry


def read_state(entry: WeightsSpec, path: Path) -> dict[str, Any]:
    """The file's tensors as a state dict in our key names."""
    if entry.format == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        from cnnkit.core.checkpoint import load_state_dict

        state = load_state_dict(path)
    return resolve(entry.convert)(state) if entry.convert else state


def load_entry(task: Any, model: Any, entry: WeightsSpec) -> tuple[int, Path]:
    """Load ``entry`` (downloaded if needed) into ``model``, or into each of its backbones when
    the weights are a backbone's (Faster R-CNN's 4-step schedule starts both of its trunks from
    them, as the paper does); heads that do not fit are left as built. Returns (tensors loaded
    into the model or its first backbone, file)."""
    from cnnkit.core.backbone import Trunk
    from cnnkit.core.checkpoint import load_weights_into

    targets = [model]
    if entry.model not in (task.spec.name, *task.spec.aliases):  # a backbone's weights
        targets = [m.body for m in model.modules() if isinstance(m, Trunk)]
        if not targets:
            raise CnnkitError(f"{task.spec.name} does not build its backbone through cnnkit's backbone contract, "
                              f"so {entry.name} has nowhere to go; use --weights PATH")
    path = fetch(entry)
    if entry.format == "darknet":  # the family reads its own format
        return task.load_weights(model, str(path)), path
    state = read_state(entry, path)
    loaded = [load_weights_into(t, state, entry.model or task.spec.name, path, strict=False) for t in targets]
    return loaded[0], path


def registered(value: str) -> WeightsSpec | None:
    """``--weights VALUE``: None for an existing file (or an unknown name), else the registered entry."""
    if not value or Path(value).is_file() or value not in weights:
        return None
    return weights.get(value)
