"""Plugin discovery through the ``cnnkit`` entry-point group; hooks called through pluggy with
per-plugin failure isolation (one broken plugin warns and the rest go on)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Callable

import pluggy

from cnnkit import __version__
from cnnkit.core import hookspecs, registry
from cnnkit.core.errors import CnnkitError

GROUP = "cnnkit"
CORE = "cnnkit.core.builtins"  # core's own tasks and dataset adapters, registered like any plugin

# hook -> (the registry it fills, the spec type it accepts)
REGISTRIES: dict[str, tuple[registry.Registry, type]] = {
    "register_tasks": (registry.tasks, registry.TaskSpec),
    "register_models": (registry.models, registry.ModelSpec),
    "register_losses": (registry.losses, registry.LossSpec),
    "register_datasets": (registry.datasets, registry.DatasetSpec),
    "register_weights": (registry.weights, registry.WeightsSpec),
}


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


def _strict() -> bool:
    return os.environ.get("CNNKIT_STRICT_PLUGINS", "") not in ("", "0")


def _fail(message: str) -> None:
    """A plugin's failure: fatal under CNNKIT_STRICT_PLUGINS=1, otherwise one warning."""
    if _strict():
        raise CnnkitError(message)
    print(f"warning: {message}", file=sys.stderr)


def _add(pm: pluggy.PluginManager, module: ModuleType, info: PluginInfo) -> None:
    """Register ``module`` with pluggy (which validates its hook signatures); refuse unknown hooks."""
    try:
        pm.register(module, name=info.name)
        unknown = [c.name for c in pm.get_hookcallers(module) or [] if not c.has_spec()]
        if unknown:
            pm.unregister(module)
            raise CnnkitError(f"unknown hook(s) {', '.join(unknown)} "
                              f"(cnnkit's hooks: {', '.join(sorted(hook_names()))})")
    except Exception as exc:  # pluggy's PluginValidationError, or ours
        info.error = f"{type(exc).__name__}: {exc}"
        _fail(f"plugin '{info.name}' is invalid and is skipped ({info.error})")
        return
    info.hooks = sorted(c.name for c in pm.get_hookcallers(module) or [])


def hook_names() -> list[str]:
    """The hooks cnnkit defines, as pluggy knows them."""
    return [name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "cnnkit_spec", None)]


def load_plugins() -> pluggy.PluginManager:
    """Load core's registrations and every plugin in the entry-point group once; fill the registries."""
    global _manager
    if _manager is not None:
        return _manager
    import importlib

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    core = PluginInfo("core", __version__, "builtin")
    _infos.append(core)
    _add(pm, importlib.import_module(CORE), core)
    wanted = {n.strip() for n in os.environ.get("CNNKIT_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if wanted and ep.name not in wanted:
            continue
        dist = ep.dist
        origin = "builtin" if dist is not None and dist.name == "cnnkit" else (dist.name if dist else "?")
        info = PluginInfo(ep.name, dist.version if dist else "?", origin)
        _infos.append(info)
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            info.error = f"{type(exc).__name__}: {exc}"
            _fail(f"plugin '{ep.name}' failed to load and is skipped ({info.error})")
            continue
        _add(pm, module, info)
    _manager = pm
    for hook, (reg, kind) in REGISTRIES.items():
        call_hook(pm, hook, lambda plugin, reg=reg, kind=kind: _registrar(reg, kind, plugin))
    return pm


def _registrar(reg: registry.Registry, kind: type, plugin: str) -> Callable[[Any], None]:
    """The ``register`` callable handed to ``plugin``: checks the spec type and records its origin."""
    def register(spec: Any) -> None:
        if not isinstance(spec, kind):
            raise CnnkitError(f"register() takes a {kind.__name__}, not {type(spec).__name__}")
        reg.add(spec.name, replace(spec, plugin=plugin), getattr(spec, "aliases", ()))
    return register


def call_hook(pm: pluggy.PluginManager, hook: str, make_arg: Callable[[str], Any]) -> None:
    """Call ``hook`` on each plugin in pluggy's order (``tryfirst``/``trylast`` honoured), one
    plugin at a time, so that one failure names its plugin and the others still run."""
    caller = getattr(pm.hook, hook)
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(*[make_arg(impl.plugin_name) for _ in impl.argnames])
        except Exception as exc:
            _fail(f"plugin '{impl.plugin_name}' failed in {hook} ({type(exc).__name__}: {exc})")


def mount_commands(app: Any) -> None:
    """Let every loaded plugin add its commands to the typer app."""
    call_hook(load_plugins(), "register_commands", lambda _plugin: app)


def plugin_infos() -> list[PluginInfo]:
    load_plugins()
    return list(_infos)


def reset() -> None:
    """Forget loaded plugins (tests that change CNNKIT_PLUGINS call this)."""
    global _manager
    _manager = None
    _infos.clear()
    for reg in registry.ALL:
        reg.clear()
