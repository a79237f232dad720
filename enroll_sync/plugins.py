"""Build the plugin manager for one app.

The manager lives on the app (``app.extensions["enroll_sync.plugins"]``), never in a
module global, so two apps in one test process do not share plugins. Installed
distributions register through the entry-point group ``enroll_sync``; tests and
embedders can pass extra plugin objects or disable entry points.
"""
from __future__ import annotations

import importlib.metadata
from typing import Iterable

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = ("enroll_sync.mapping.builtin_steps",)


def build_plugin_manager(load_entrypoints: bool = True, extra_plugins: Iterable = (),
                         blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("enroll_sync")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        mod = importlib.import_module(name)
        pm.register(mod, name=name)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints("enroll_sync")
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def plugin_manager(*plugins, defaults: bool = False) -> pluggy.PluginManager:
    """A manager holding only ``plugins`` (modules or objects with ``@hookimpl``s), for
    a plugin's own hook tests: no entry points, and the core's built-in steps only when
    ``defaults``. ``check_pending()`` has run, so a misspelt hook fails here."""
    pm = pluggy.PluginManager("enroll_sync")
    pm.add_hookspecs(hookspecs)
    if defaults:
        for name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(name), name=name)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def plugin_descriptions(pm: pluggy.PluginManager) -> list[dict]:
    """What ``enroll-sync plugins`` prints: name, version and hooks of each plugin."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or ())
        out.append({
            "name": name,
            "version": dist.version if dist else None,
            "distribution": dist.project_name if dist else None,
            "hooks": hooks,
        })
    return out


def adapter_classes(pm: pluggy.PluginManager) -> dict:
    """name -> SISAdapter subclass, from every ``register_sis_adapters`` answer."""
    out = {}
    for batch in pm.hook.register_sis_adapters():
        for cls in batch or ():
            out[cls.name] = cls
    return out


def step_classes(pm: pluggy.PluginManager) -> dict:
    """kind -> Step class, from every ``register_transformations`` answer."""
    out = {}
    for batch in pm.hook.register_transformations():
        for cls in batch or ():
            out[cls.kind] = cls
    return out
