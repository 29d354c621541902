"""Published weights on demand: find a registered file in torch's cache
(``$TORCH_HOME/hub/checkpoints``) or download it there, hash-checked, and load it into a model.

A download goes to a temporary file next to its final place and is moved there only once its
SHA-256 (or torchvision's hash prefix) matches. Every failure is one :class:`CnnkitError` line:
the URL and the cache path where the file can be put by hand on an offline machine.
``CNNKIT_WEIGHTS_MIRROR=URL`` fetches every file from ``URL/<file name>`` instead of its home.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cnnkit.core.base.atomic import Terminated, atomic_path, sigterm_unwinds
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import ModelSpec, WeightsSpec, models, resolve, weights
from cnnkit.core.weights.formats import parse_problem, safetensors_problem

MIRROR = "CNNKIT_WEIGHTS_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 30


def cache_dir() -> Path:
    """torch's checkpoint cache, ``torch.hub.get_dir()/checkpoints``: ``$TORCH_HOME/hub/checkpoints``,
    else ``$XDG_CACHE_HOME/torch/...`` (``~/.cache/torch/...``), found without importing torch."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:  # torch is loaded: its answer, which honours torch.hub.set_dir
        return Path(hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


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
    if entry.size and size != entry.size:
        return f"size mismatch (expected {entry.size} bytes, got {size})"
    return ""


def hashed(entry: WeightsSpec) -> bool:
    return bool(entry.sha256 or entry.hash_prefix)


def known_sha256(path: Path) -> str:
    """The file's SHA-256, hashed once: remembered in a sidecar ``.<file>.sha256`` keyed by its size
    and mtime, so a changed file is hashed again."""
    stat = path.stat()
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    sidecar = path.with_name(f".{path.name}.sha256")
    try:
        stored_key, digest = sidecar.read_text().rsplit(" ", 1)
        if stored_key == key and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_of(path)
    try:
        with atomic_path(sidecar) as tmp:
            tmp.write_text(f"{key} {digest}")
    except OSError:  # a read-only cache: hash again next time
        pass
    return digest


def verify_cached(entry: WeightsSpec, path: Path) -> None:
    """Refuse a cached file whose size (or hash, when published) is not the entry's: one line."""
    size = path.stat().st_size
    problem = check(entry, known_sha256(path) if hashed(entry) else "", size) if hashed(entry) or entry.size else ""
    if problem:
        raise CnnkitError(f"{path}: the cached {entry.name} file does not match the registry ({problem}); "
                          f"delete it and run `cnnkit weights pull {entry.name}`")


def clean_partial(target: Path) -> None:
    """Remove temporary files a killed download of ``target`` left beside it (untouched for twice
    the read timeout, so another process's download in progress is left alone)."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > 2 * TIMEOUT_S:
                tmp.unlink()


def fetch(entry: WeightsSpec) -> Path:
    """``entry``'s file in the cache (checked before each use), downloaded first if it is not there
    yet; a download is moved into place only once its hash matches (or, when its publisher gives
    none, once it parses completely)."""
    target = cache_path(entry)
    if target.is_file():
        verify_cached(entry, target)
        return target
    url = source_url(entry)
    by_hand = f"put {entry.file} at {target} by hand (or set {MIRROR}=URL)"
    clean_partial(target)
    try:
        with sigterm_unwinds(), atomic_path(target) as tmp:
            digest, size = _download(url, tmp, entry)
            problem = check(entry, digest, size) or ("" if hashed(entry) else parse_problem(entry, tmp))
            if problem:
                raise CnnkitError(f"{entry.file}: {problem}; the download from {url} was discarded")
    except Terminated:
        print(f"error: download of {entry.file} stopped by SIGTERM; nothing was kept", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except urllib.error.HTTPError as exc:
        raise CnnkitError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); {by_hand}") from None
    except urllib.error.URLError as exc:
        raise CnnkitError(f"cannot download {url} ({_reason(exc.reason)}); {by_hand}") from None
    except http.client.IncompleteRead:
        raise CnnkitError(f"cannot download {url} (the connection closed before the end of the file); "
                          f"{by_hand}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, a bad URL, a full disk
        raise CnnkitError(f"cannot download {url} ({_reason(exc)}); {by_hand}") from None
    if hashed(entry):
        with contextlib.suppress(OSError):  # remember the hash just checked
            known_sha256(target)
    else:
        print(f"warning: {entry.file}: its publisher gives no hash; kept because it parses completely",
              file=sys.stderr)
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
        announced = int(response.headers.get("Content-Length") or 0)
        columns = (TextColumn(entry.file), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            bar = progress.add_task("download", total=announced or entry.size)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.advance(bar, len(chunk))
    if announced and size != announced:
        raise http.client.IncompleteRead(b"", announced - size)
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
        wanted = ", ".join(flag(k, v) for k, v in clash.items())
        raise CnnkitError(f"{entry.name} weights were trained for {entry.variant}: they need {wanted}; "
                          "drop the conflicting option or do without them")
    options.update(entry.options)
    return entry


def flag(key: str, value: Any) -> str:
    """The option as a user types it; None (the builder's own choice) is the option left out."""
    name = "--" + key.replace("_", "-")
    if value is None:
        return f"no {name}"
    return f"{name} {str(value).lower() if isinstance(value, bool) else value}"


def read_state(entry: WeightsSpec, path: Path) -> dict[str, Any]:
    """The file's tensors as a state dict in our key names (a file that does not parse: one line)."""
    if entry.format == "safetensors":
        problem = safetensors_problem(path)
        if problem:
            raise CnnkitError(f"{path}: {problem}; delete it and pull {entry.name} again")
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        from cnnkit.core.weights.checkpoint import load_state_dict

        state = load_state_dict(path)
    return resolve(entry.convert)(state) if entry.convert else state


def registered(value: str) -> WeightsSpec | None:
    """``--weights VALUE``: None for an existing file (or an unknown name), else the registered entry."""
    if not value or Path(value).is_file() or value not in weights:
        return None
    return weights.get(value)


def choose(value: str, spec: ModelSpec, options: dict[str, Any]) -> tuple[WeightsSpec | None, Path | None]:
    """``--weights VALUE`` for ``spec``: a registered name gives (entry, None: its cache file); a
    file that is a registered one (:func:`identify`) gives (entry, the file), so it loads as that
    name does; another file gives (None, the file), refused first when it may need other wiring
    (:func:`refuse_other_variant`). Neither: one line."""
    entry = registered(value)
    if entry is not None:
        return entry, None
    if not Path(value).is_file():
        raise CnnkitError(f"--weights {value}: no such file, and no registered weights of that name "
                          "(see `cnnkit weights list`)")
    entry = identify(value, spec)
    if entry is None:
        refuse_other_variant(value, spec, options)
    return entry, Path(value)


def checkpoint_norm(path: str | Path) -> tuple[Any, Any]:
    """The input transform a cnnkit checkpoint was trained with ((None, None) for a bare state dict
    or a checkpoint from before transforms were recorded)."""
    from cnnkit.core.weights.checkpoint import load_checkpoint

    try:
        config = load_checkpoint(path)["config"]
    except CnnkitError:
        return None, None
    return config.get("mean"), config.get("std")


def identify(path: str | Path, spec: ModelSpec) -> WeightsSpec | None:
    """The registry entry a file given by path is (for ``spec`` or its backbone): by its file
    name (torchvision's names carry their hash prefix), else by its contents' SHA-256."""
    path = Path(path)
    found = [w for _, w in weights.items() if w.model in (spec.name, *spec.aliases)]
    backbone = spec.build_kwargs.get("backbone")
    if isinstance(backbone, str) and backbone in models:
        found += for_model(backbone)
    by_name = [w for w in found if w.file == path.name]
    if by_name:
        return by_name[0]
    if not any(hashed(w) for w in found):
        return None
    digest = sha256_of(path)
    return next((w for w in found if (w.sha256 and w.sha256 == digest)
                 or (w.hash_prefix and digest.startswith(w.hash_prefix))), None)


def refuse_other_variant(path: str | Path, spec: ModelSpec, options: dict[str, Any]) -> None:
    """A bare state dict no entry identifies, for a model whose published weights need options
    the user left at their defaults (resnet50's ``stride_in_1x1``: the same keys, other wiring):
    refused in one line naming the option, never loaded into the wiring it may not fit."""
    from cnnkit.core.weights.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
        return  # a cnnkit checkpoint: the user's own training
    except CnnkitError:
        pass
    for entry in for_model(spec.name):
        differ = {k: v for k, v in entry.options.items()
                  if k not in options and k in spec.options and spec.options[k] != v}
        if differ and not entry.mismatch and _same_layout(spec, entry.options, options):
            k, v = next(iter(differ.items()))
            flag = f"--{k.replace('_', '-')}"
            value = str(v).lower() if isinstance(v, bool) else v
            default = str(spec.options[k]).lower() if isinstance(spec.options[k], bool) else spec.options[k]
            raise CnnkitError(f"{path}: a {spec.name} state dict in {entry.name}'s layout, whose published weights "
                              f"need {flag} {value} ({entry.variant}); pass {flag} {value} for those, or "
                              f"{flag} {default} for cnnkit's default wiring")


def _same_layout(spec: ModelSpec, entry_options: dict[str, Any], options: dict[str, Any]) -> bool:
    import torch

    with torch.device("meta"):
        a = spec.create(num_classes=spec.num_classes, **{**spec.options, **options}).state_dict()
        b = spec.create(num_classes=spec.num_classes, **{**spec.options, **options, **entry_options}).state_dict()
    return {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
