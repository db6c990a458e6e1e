"""A timm-style registry: ``@REGISTRY.register("name")`` on a factory, then ``REGISTRY.build("name", **kw)``.

A registry made with ``entry_point_group`` also holds the factories of installed plugins: every entry point of that
group (``importlib.metadata``) is loaded lazily, once, the first time the registry is listed or asked for a name it
does not hold. An entry point naming a module is only imported (its ``@register`` calls register); any other object is
registered under the entry point's name. A plugin that fails to load raises :class:`ConfigError` naming the entry point.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → factory map with clear errors for unknown names and bad keyword arguments."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._plugins: dict[str, str] = {}  # name -> description of the entry point it came from
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Sorted registered names (installed plugins included)."""
        self.load_plugins()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            self.load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(names)}{hint}") from None

    def origin(self, name: str) -> str:
        """Where ``name`` comes from: ``plugin: entry point ...``, else the module of its factory."""
        factory = self.get(name)
        return f"plugin: {self._plugins[name]}" if name in self._plugins else getattr(factory, "__module__", "?")

    def load_plugins(self) -> None:
        """Load the entry points of ``entry_point_group`` once (see the module docstring)."""
        if self._plugins_loaded:
            return
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            dist = getattr(ep, "dist", None)
            package = f"{dist.name} {dist.version}" if dist is not None else "?"
            where = f"entry point '{ep.name} = {ep.value}' (group {self.entry_point_group}, package {package})"
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - third-party code: any failure is reported with its origin
                raise ConfigError(f"{self.kind} plugin {where} failed to load: {type(exc).__name__}: {exc}") from exc
            if inspect.ismodule(obj) or ep.name in self._factories:
                continue
            if not callable(obj):
                raise ConfigError(f"{self.kind} plugin {where}: expected a factory, got {type(obj).__name__}")
            self.register(ep.name)(obj)
            self._plugins[ep.name] = where
        self._plugins_loaded = True

    def build(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                valid = ", ".join(sorted(params)) or "(none)"
                raise ConfigError(f"{self.kind} {name!r} got unknown argument(s) {', '.join(unknown)}; valid: {valid}")
        return factory(**kwargs)
