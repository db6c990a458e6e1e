"""timm-style loss registry: ``@register_loss(name, search_space=...)`` on a factory, ``build_loss(name, **kwargs)``.

Each registered loss declares its defaults (taken from the factory signature, optionally overridden by
``defaults=``) and the hyperparameters a search may tune, in an Optuna-friendly form::

    {"alpha": {"type": "float", "low": 0.1, "high": 0.9, "log": False},
     "gamma": {"type": "categorical", "choices": [1.0, 2.0]}}

so that a study over any loss is a YAML file.

Losses from outside the zoo, three ways (docs/losses.md, "Add your own loss"):

* **a name ``"package.module:factory"``** (``loss.name`` in a config): imported with :mod:`importlib`; ``factory`` is a
  loss class or a function returning one, and its signature defaults are the loss's defaults;
* **``@register_loss`` in the user's module**, imported by ``lss-bench --import MODULE``;
* **the entry-point group ``lss_vlm.losses``** of an installed package (``[project.entry-points."lss_vlm.losses"]``,
  ``my_loss = "my_pkg.losses:MyLoss"`` registers ``MyLoss`` as ``my_loss``; a value naming a module just imports it,
  for modules that ``@register_loss`` several). Plugins are loaded lazily, once, the first time the registry is
  listed or asked for a name it does not hold (as pytest and timm do); a plugin that fails to import raises
  :class:`LossConfigError` naming the entry point.

Any ``torch.nn.Module`` called as ``loss(logits, target)`` is a loss; the hooks of :class:`losses.base.SegLoss` are
optional.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import LossConfigError, UnknownLossError

PARAM_TYPES = ("float", "int", "categorical")
#: Entry-point group of installed loss plugins (``importlib.metadata``).
ENTRY_POINT_GROUP = "lss_vlm.losses"


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    defaults: dict[str, Any]
    search_space: dict[str, dict[str, Any]]
    source: str
    summary: str = field(default="")
    requires: tuple[str, ...] = ()
    check: Callable[..., None] | None = None


_LOSSES: dict[str, _Entry] = {}
_IMPORTED: dict[str, _Entry] = {}  # "package.module:factory" names resolved so far (not listed as registered)
_PLUGINS: dict[str, str] = {}  # registered name -> "entry point NAME = VALUE (package DIST)" of plugin losses
_plugins_loaded = False


def _check_search_space(name: str, params: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]]) -> None:
    for param, spec in space.items():
        where = f"loss {name!r} search space {param!r}"
        if param not in params:
            raise LossConfigError(f"{where}: not an argument of the loss; valid: {', '.join(sorted(params))}")
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            raise LossConfigError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise LossConfigError(f"{where}: categorical needs a non-empty 'choices' list")
        elif not ("low" in spec and "high" in spec and spec["low"] < spec["high"]):
            raise LossConfigError(f"{where}: {kind} needs 'low' < 'high', got {dict(spec)}")
        elif spec.get("log") and spec["low"] <= 0:
            raise LossConfigError(f"{where}: a log-scale range needs low > 0, got {spec['low']}")


def register_loss(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    search_space: Mapping[str, Mapping[str, Any]] | None = None,
    source: str = "",
    requires: tuple[str, ...] = (),
    check: Callable[..., None] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a loss factory under ``name``.

    Args:
        name: registry name (``build_loss(name)``).
        defaults: overrides of the factory signature defaults (reported by ``loss_spec``, used by ``build_loss``).
        search_space: tunable hyperparameters, ``{param: {"type": "float"|"int"|"categorical", "low", "high",
            "log", "choices"}}``; every key must be an argument of the factory.
        source: the library class the loss comes from (documentation only), e.g. ``"monai.losses.DiceLoss"``.
        requires: top-level modules the factory imports when it builds (``("monai",)``), whose first import is slow:
            :func:`check_loss` then checks the arguments without building (``check`` stands in for the build).
        check: ``check(**arguments)`` raising ``ValueError`` for a value the factory or its library would refuse
            (e.g. MONAI's ``lambda_dice >= 0``); the factory calls it too, so both give the same message.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _LOSSES:
            raise LossConfigError(f"loss {name!r} is registered twice")
        params = inspect.signature(factory).parameters
        signature_defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        unknown = sorted(set(defaults or {}) - set(params))
        if unknown:
            raise LossConfigError(f"loss {name!r}: defaults for unknown argument(s) {', '.join(unknown)}")
        space = {k: dict(v) for k, v in (search_space or {}).items()}
        _check_search_space(name, params, space)
        for spec in space.values():
            if spec["type"] != "categorical":
                spec.setdefault("log", False)
        merged = {**signature_defaults, **(defaults or {})}
        _LOSSES[name] = _Entry(factory, merged, space, source, _summary(factory), tuple(requires), check)
        return factory

    return decorator


def _summary(factory: Callable[..., Any]) -> str:
    """The first line of the factory's docstring."""
    return (inspect.getdoc(factory) or "").strip().split("\n", 1)[0]


def register_nobg_variant(name: str) -> None:
    """Register ``<name>_nobg``: the registered loss ``name`` with ``include_background=False`` (same factory and
    search space). That setting collapses a softmax model's background into the smallest class when the loss has no
    per-pixel term (docs/losses.md); the variant keeps the pitfall reachable by name so a benchmark can show it."""
    entry = _entry(name)
    register_loss(
        f"{name}_nobg",
        defaults={**entry.defaults, "include_background": False},
        search_space=entry.search_space,
        source=f"{entry.source}(include_background=False): background unsupervised, collapse-prone",
        requires=entry.requires,
        check=entry.check,
    )(entry.factory)


def available_losses() -> list[str]:
    """Sorted names of every registered loss (installed plugins included)."""
    load_plugins()
    return sorted(_LOSSES)


def load_plugins() -> None:
    """Load the installed plugins of the entry-point group :data:`ENTRY_POINT_GROUP`, once per process.

    An entry point whose object is a module is only imported (its ``@register_loss`` calls register); any other object
    (a loss class or factory) is registered under the entry point's name. Raises :class:`LossConfigError` naming the
    entry point and its package when one cannot be loaded.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP}, package {_dist_name(ep)})"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported with its origin
            raise LossConfigError(f"loss plugin {where} failed to load: {type(exc).__name__}: {exc}") from exc
        if inspect.ismodule(obj) or ep.name in _LOSSES:
            continue
        if not callable(obj):
            raise LossConfigError(f"loss plugin {where}: expected a loss class or factory, got {type(obj).__name__}")
        register_loss(ep.name, source=f"plugin {ep.value}")(obj)
        _PLUGINS[ep.name] = where
    _plugins_loaded = True


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"


def _entry(name: str) -> _Entry:
    if name in _LOSSES:
        return _LOSSES[name]
    if ":" in name:
        return _imported_entry(name)
    load_plugins()
    if name in _LOSSES:
        return _LOSSES[name]
    names = sorted(_LOSSES)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UnknownLossError(
        f"unknown loss {name!r}; choose one of: {', '.join(names)}, or 'package.module:factory'{hint}"
    ) from None


def _imported_entry(name: str) -> _Entry:
    """The entry of a ``"package.module:factory"`` name: ``factory`` imported with :mod:`importlib`, not registered."""
    if name in _IMPORTED:
        return _IMPORTED[name]
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UnknownLossError(f"loss {name!r}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module: any import failure is reported with the name
        raise UnknownLossError(f"loss {name!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise UnknownLossError(f"loss {name!r}: {module_name!r} has no loss class or factory named {attr!r}")
    params = inspect.signature(factory).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    _IMPORTED[name] = _Entry(factory, defaults, {}, name, _summary(factory))
    return _IMPORTED[name]


def loss_origin(name: str) -> str:
    """Where a loss comes from: ``plugin: entry point ...`` for an installed plugin, ``import: NAME`` for a
    ``package.module:factory`` name, else the module of its factory."""
    entry = _entry(name)
    if name in _PLUGINS:
        return f"plugin: {_PLUGINS[name]}"
    if ":" in name:
        return f"import: {name}"
    return getattr(entry.factory, "__module__", "?")


def loss_spec(name: str) -> dict[str, Any]:
    """``{"name", "source", "summary", "defaults", "search_space"}`` of a registered loss (a deep copy)."""
    entry = _entry(name)
    return {
        "name": name,
        "source": entry.source,
        "summary": entry.summary,
        "defaults": copy.deepcopy(entry.defaults),
        "search_space": copy.deepcopy(entry.search_space),
    }


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss ``name`` with its registered defaults overridden by ``kwargs``.

    ``name`` is a registered name or ``"package.module:factory"``.

    Raises:
        UnknownLossError: ``name`` is not registered (the message lists the registered names) or cannot be imported.
        LossConfigError: an unknown keyword argument (the message lists the valid ones), an invalid value, or a
            factory that does not return a ``torch.nn.Module``.
    """
    entry = _entry(name)
    _check_names(name, entry, kwargs)
    loss = entry.factory(**{**entry.defaults, **kwargs})
    if not isinstance(loss, nn.Module):
        raise LossConfigError(
            f"loss {name!r}: the factory returned a {type(loss).__name__}; expected a torch.nn.Module called as "
            "loss(logits, target)"
        )
    return loss


def _check_names(name: str, entry: _Entry, kwargs: Mapping[str, Any]) -> None:
    params = inspect.signature(entry.factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(sorted(params)) or "(none)"
        raise LossConfigError(f"loss {name!r} got unknown argument(s) {', '.join(unknown)}; valid: {valid}")


def check_loss(name: str, params: Mapping[str, Any], build: bool | None = None) -> None:
    """Raise what ``build_loss(name, **params)`` would raise, building only when that is cheap.

    ``build=None``: build the loss unless its factory ``requires`` a module this process has not imported yet (the
    MONAI-backed losses: ``import monai`` imports every MONAI submodule and most of its optional dependencies, ~4 s
    CPU, the bulk of ``lss-bench validate``). Without building, the same checks are made: the loss name, unknown
    argument names (same message as :func:`build_loss`), missing required arguments (``inspect.Signature.bind``) and
    the factory's registered ``check`` of the values (what the factory or its library's constructor refuses).
    ``build=True`` / ``False`` force either way (tests compare the two).

    Raises:
        UnknownLossError, LossConfigError: as :func:`build_loss`. TypeError, ValueError: a missing argument or a
            value the factory refuses.
    """
    entry = _entry(name)
    if build is None:
        build = all(module in sys.modules for module in entry.requires)
    if build:
        build_loss(name, **params)
        return
    _check_names(name, entry, params)
    arguments = {**entry.defaults, **params}
    inspect.signature(entry.factory).bind(**arguments)
    if entry.check is not None:
        entry.check(**arguments)
