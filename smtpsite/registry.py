"""Loading delivery plugins from the ``smtpsite.delivery_methods`` entry-point group."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points

from smtpsite.delivery import DeliveryMethod

ENTRY_POINT_GROUP = "smtpsite.delivery_methods"
log = logging.getLogger(__name__)


class PluginConflictError(RuntimeError):
    """Two plugins claim the same name."""


class UnknownMethodError(LookupError):
    """No installed plugin has this name."""


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin class and where it came from."""

    cls: type[DeliveryMethod]
    source: str


class PluginRegistry:
    """The delivery methods available to one app, by name."""

    def __init__(self, plugins: Iterable[LoadedPlugin] = ()) -> None:
        self._plugins: dict[str, LoadedPlugin] = {}
        for plugin in plugins:
            self.add(plugin)

    def add(self, plugin: LoadedPlugin) -> None:
        """Register ``plugin``; a second plugin with the same name is an error."""
        name = plugin.cls.name
        if name in self._plugins:
            raise PluginConflictError(
                f"two delivery plugins are named {name!r}: {self._plugins[name].source} "
                f"and {plugin.source}; uninstall one of them"
            )
        self._plugins[name] = plugin

    def get(self, name: str) -> type[DeliveryMethod]:
        """Return the plugin class named ``name``."""
        try:
            return self._plugins[name].cls
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise UnknownMethodError(
                f"no delivery method named {name!r} is installed (installed: {known})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self):
        return iter(sorted(self._plugins.values(), key=lambda p: p.cls.name))

    def names(self) -> list[str]:
        """The names of every loaded plugin, sorted."""
        return sorted(self._plugins)


def _check_plugin_class(obj: object, source: str) -> type[DeliveryMethod]:
    if not (isinstance(obj, type) and issubclass(obj, DeliveryMethod)):
        raise TypeError(f"{source} is not a DeliveryMethod subclass")
    for attr in ("name", "label"):
        if not isinstance(getattr(obj, attr, None), str) or not getattr(obj, attr):
            raise TypeError(f"{source} has no {attr!r}")
    names = [f.name for f in obj.fields]
    if len(names) != len(set(names)):
        raise TypeError(f"{source} declares a field name twice")
    return obj


def load_entry_point_plugins(group: str = ENTRY_POINT_GROUP) -> PluginRegistry:
    """Load every plugin of ``group``; one that fails to import is logged and skipped."""
    registry = PluginRegistry()
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        source = f"{ep.value} (package {dist})"
        try:
            cls = _check_plugin_class(ep.load(), source)
        except Exception:
            log.exception("delivery plugin %r from %s failed to load and is skipped", ep.name, source)
            continue
        if cls.name != ep.name:
            log.error(
                "delivery plugin entry point %r names class %s whose name is %r; skipped",
                ep.name, source, cls.name,
            )
            continue
        registry.add(LoadedPlugin(cls, source))
    return registry


def registry_from_classes(classes: Iterable[type[DeliveryMethod]]) -> PluginRegistry:
    """Build a registry from classes given directly (tests, embedding)."""
    return PluginRegistry(
        LoadedPlugin(_check_plugin_class(c, c.__module__), f"{c.__module__}.{c.__qualname__}")
        for c in classes
    )
