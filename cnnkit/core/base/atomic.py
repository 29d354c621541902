"""Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``; SIGTERM made to
unwind like Ctrl-C, so that a killed write leaves no temp file behind."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named before it exists, so that a signal right after its creation still has it removed
    # (mkstemp returns the name only once the file exists: a SIGTERM in between left it behind)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))  # 0600 would hide the file from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mode_for(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the file's own when it exists,
    else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


class Terminated(BaseException):
    """SIGTERM inside :func:`sigterm_unwinds`: unwinds (``finally`` blocks run, so
    :func:`atomic_path` removes its temporary file) and is caught by the command that set it up."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of ending the process at once
    (SIGINT already raises ``KeyboardInterrupt``); outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
