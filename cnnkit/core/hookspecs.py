"""The plugin API: four tiny hooks. Each receives a callable or the app and returns nothing."""

from typing import Any, Callable

import pluggy

PROJECT = "cnnkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_models(register: Callable[[Any], None]) -> None:
    """Call ``register(ModelSpec(...))`` once per model the plugin provides."""


@hookspec
def register_losses(register: Callable[..., None]) -> None:
    """Call ``register(name, factory)`` for each named loss factory."""


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Call ``register(DatasetSpec(...))`` for each dataset adapter or synthetic set."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands or sub-apps to ``app`` (a ``typer.Typer``)."""
