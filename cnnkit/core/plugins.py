"""Plugin discovery through the ``cnnkit`` entry-point group, with failure isolation."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import pluggy

from cnnkit.core import hookspecs, registry
from cnnkit.core.errors import CnnkitError

GROUP = "cnnkit"
HOOKS = ("register_models", "register_losses", "register_datasets", "register_commands")


@dataclass
class PluginInfo:
    """What ``cnnkit plugins`` shows about one plugin."""

    name: str
    version: str
    origin: str  # "builtin" or the distribution that provides it
    hooks: list[str] = field(default_factory=list)
    error: str = ""


_manager: pluggy.PluginManager | None = None
_infos: list[PluginInfo] = []


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_plugins() -> pluggy.PluginManager:
    """Load every plugin in the entry-point group once; fill the registries."""
    global _manager
    if _manager is not None:
        return _manager
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    strict = os.environ.get("CNNKIT_STRICT_PLUGINS", "") not in ("", "0")
    wanted = {n.strip() for n in os.environ.get("CNNKIT_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if wanted and ep.name not in wanted:
            continue
        dist = ep.dist
        origin = "builtin" if dist is not None and dist.name == "cnnkit" else (dist.name if dist else "?")
        info = PluginInfo(ep.name, dist.version if dist else "?", origin)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            if strict:
                raise CnnkitError(f"plugin '{ep.name}' failed to load: {exc}") from exc
            info.error = f"{type(exc).__name__}: {exc}"
            _warn(f"plugin '{ep.name}' failed to load and is skipped ({info.error})")
        else:
            info.hooks = [h for h in HOOKS if hasattr(module, h)]
        _infos.append(info)
    _manager = pm
    _fill_registries(pm, strict)
    return pm


def _call_each(pm: pluggy.PluginManager, hook: str, strict: bool, make_arg: Any) -> None:
    """Call ``hook`` on each plugin separately so that one failure names its plugin."""
    for name, plugin in pm.list_name_plugin():
        impl = getattr(plugin, hook, None)
        if impl is None:
            continue
        try:
            impl(make_arg(name))
        except Exception as exc:
            if strict:
                raise CnnkitError(f"plugin '{name}' failed in {hook}: {exc}") from exc
            _warn(f"plugin '{name}' failed in {hook} ({type(exc).__name__}: {exc})")


def _fill_registries(pm: pluggy.PluginManager, strict: bool) -> None:
    def model_register(plugin: str):
        def register(spec: registry.ModelSpec) -> None:
            registry.models.add(spec.name, replace(spec, plugin=plugin), spec.aliases)
        return register

    def loss_register(plugin: str):
        def register(name: str, factory: registry.Ref) -> None:
            registry.losses.add(name, factory)
        return register

    def dataset_register(plugin: str):
        def register(spec: registry.DatasetSpec) -> None:
            registry.datasets.add(spec.name, replace(spec, plugin=plugin))
        return register

    from cnnkit.core.data import register_builtin

    register_builtin(dataset_register("core"))
    _call_each(pm, "register_models", strict, model_register)
    _call_each(pm, "register_losses", strict, loss_register)
    _call_each(pm, "register_datasets", strict, dataset_register)


def mount_commands(app: Any) -> None:
    """Let every loaded plugin add its commands to the typer app."""
    pm = load_plugins()
    strict = os.environ.get("CNNKIT_STRICT_PLUGINS", "") not in ("", "0")
    _call_each(pm, "register_commands", strict, lambda _name: app)


def plugin_infos() -> list[PluginInfo]:
    load_plugins()
    return list(_infos)


def reset() -> None:
    """Forget loaded plugins (tests that change CNNKIT_PLUGINS call this)."""
    global _manager
    _manager = None
    _infos.clear()
    for reg in (registry.models, registry.losses, registry.datasets):
        reg.clear()
