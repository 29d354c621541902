"""The plugin API: six tiny hooks. Each receives a ``register`` callable (or the app) and returns
nothing. Built-in plugins, core's own registrations included, use them exactly like third parties."""

from typing import Any, Callable

import pluggy

PROJECT = "cnnkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_tasks(register: Callable[[Any], None]) -> None:
    """Call ``register(TaskSpec(name, build))`` once per task the plugin provides."""


@hookspec
def register_models(register: Callable[[Any], None]) -> None:
    """Call ``register(ModelSpec(name, task, build, ...))`` once per model the plugin provides."""


@hookspec
def register_losses(register: Callable[[Any], None]) -> None:
    """Call ``register(LossSpec(name, build, tasks))`` for each named loss factory."""


@hookspec
def register_datasets(register: Callable[[Any], None]) -> None:
    """Call ``register(DatasetSpec(...))`` for each dataset adapter or synthetic set."""


@hookspec
def register_weights(register: Callable[[Any], None]) -> None:
    """Call ``register(WeightsSpec(name, file, url, ...))`` for each published weights file."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands or sub-apps to ``app`` (a ``typer.Typer``)."""
