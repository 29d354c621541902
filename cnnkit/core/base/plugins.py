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

from cnnkit.core.base import hookspecs, registry
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.version import __version__

GROUP = "cnnkit"
CORE = "cnnkit.core.tasks.builtins"  # core's own tasks and dataset adapters, registered like any plugin

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


def _fail(message: str, outcome: str = "it is skipped") -> None:
    """A plugin's failure: fatal under CNNKIT_STRICT_PLUGINS=1, otherwise one warning saying what
    happens instead (``outcome``)."""
    if _strict():
        raise CnnkitError(f"{message} (fatal: CNNKIT_STRICT_PLUGINS=1)")
    print(f"warning: {message}; {outcome}", file=sys.stderr)


def _builtin(plugin: str) -> bool:
    return plugin == "core" or any(i.name == plugin and i.origin == "builtin" for i in _infos)


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
        _fail(f"plugin '{info.name}' is invalid ({info.error})")
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
        except (Exception, SystemExit) as exc:  # a broken third-party plugin must not take the CLI down
            info.error = f"{type(exc).__name__}: {exc}"
            _fail(f"plugin '{ep.name}' failed to load ({info.error})")
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
        holder = reg.holder(spec.name)
        if holder is not None:  # this registration alone is refused; built-in names win whatever the order
            intruder = holder if _builtin(plugin) and not _builtin(holder) else plugin
            keeper = plugin if intruder == holder else holder
            _fail(f"plugin '{intruder}' registers {reg.kind} '{spec.name}', which plugin '{keeper}' provides",
                  f"{intruder}'s is refused")
            if intruder == plugin:
                return
            reg.remove(spec.name)
        reg.add(spec.name, replace(spec, plugin=plugin), getattr(spec, "aliases", ()))
    return register


def call_hook(pm: pluggy.PluginManager, hook: str, make_arg: Callable[[str], Any],
              after: Callable[[str], None] | None = None) -> None:
    """Call ``hook`` on each plugin in pluggy's order (``tryfirst``/``trylast`` honoured), one
    plugin at a time, so that one failure (an exception or ``sys.exit()``) names its plugin and
    the others still run; ``after(plugin)`` follows each call."""
    caller = getattr(pm.hook, hook)
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(*[make_arg(impl.plugin_name) for _ in impl.argnames])
        except (Exception, SystemExit) as exc:
            _fail(f"plugin '{impl.plugin_name}' failed in {hook} ({type(exc).__name__}: {exc})",
                  "what it registered before failing stays")
        if after is not None:
            after(impl.plugin_name)


def _commands(app: Any) -> list[tuple[str, Any]]:
    """(name, entry) for each command and sub-app of a typer app."""
    from typer.main import get_command_name

    return [(c.name or get_command_name(c.callback.__name__), c) for c in app.registered_commands] + \
        [(g.name or g.typer_instance.info.name, g) for g in app.registered_groups]


def _drop(app: Any, entry: Any) -> None:
    for entries in (app.registered_commands, app.registered_groups):
        entries[:] = [e for e in entries if e is not entry]


def mount_commands(app: Any) -> None:
    """Let every loaded plugin add its commands to the typer app. A name that cnnkit or another
    plugin has is refused with a warning naming the plugin that tried (built-in plugins win)."""
    owners = {name: ("core", entry) for name, entry in _commands(app)}
    seen = {id(entry) for _, entry in _commands(app)}

    def refuse_clashes(plugin: str) -> None:
        for name, entry in _commands(app):
            if id(entry) in seen:
                continue
            seen.add(id(entry))
            if name not in owners:
                owners[name] = (plugin, entry)
                continue
            first, kept = owners[name]
            if first != "core" and _builtin(plugin) and not _builtin(first):
                _fail(f"plugin '{first}' registers the command '{name}', which plugin '{plugin}' provides",
                      f"{first}'s is refused")
                _drop(app, kept)
                owners[name] = (plugin, entry)
            else:
                provider = "cnnkit" if first == "core" else f"plugin '{first}'"
                _fail(f"plugin '{plugin}' registers the command '{name}', which {provider} provides",
                      f"{plugin}'s is refused")
                _drop(app, entry)

    call_hook(load_plugins(), "register_commands", lambda _plugin: app, after=refuse_clashes)


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
