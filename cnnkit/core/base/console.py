"""Where progress and notices go: one rich console on stderr, silenced by :func:`quiet` (the Python
API's ``verbose=False``). Rich loads on first use."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Iterator

_quiet: ContextVar[bool] = ContextVar("cnnkit_quiet", default=False)


@lru_cache(maxsize=1)
def stderr() -> Any:
    """The stderr console (lines stay whole when piped)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def verbose() -> bool:
    """Whether progress and notices are shown."""
    return not _quiet.get()


def notice(text: str) -> None:
    """One line for the user on stderr (plain text, never read as markup), unless quiet."""
    if verbose():
        stderr().print(text, markup=False, highlight=False)


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress bars or notices inside the block when ``on``."""
    token = _quiet.set(on)
    try:
        yield
    finally:
        _quiet.reset(token)
