"""timm-style loss registry: ``@register_loss(name, search_space=...)`` on a factory, ``build_loss(name, **kwargs)``.

Each registered loss declares its defaults (taken from the factory signature, optionally overridden by
``defaults=``) and the hyperparameters a search may tune, in an Optuna-friendly form::

    {"alpha": {"type": "float", "low": 0.1, "high": 0.9, "log": False},
     "gamma": {"type": "categorical", "choices": [1.0, 2.0]}}

so that a study over any loss is a YAML file.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import LossConfigError, UnknownLossError

PARAM_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    defaults: dict[str, Any]
    search_space: dict[str, dict[str, Any]]
    source: str
    summary: str = field(default="")


_LOSSES: dict[str, _Entry] = {}


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
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a loss factory under ``name``.

    Args:
        name: registry name (``build_loss(name)``).
        defaults: overrides of the factory signature defaults (reported by ``loss_spec``, used by ``build_loss``).
        search_space: tunable hyperparameters, ``{param: {"type": "float"|"int"|"categorical", "low", "high",
            "log", "choices"}}``; every key must be an argument of the factory.
        source: the library class the loss comes from (documentation only), e.g. ``"monai.losses.DiceLoss"``.
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
        summary = (inspect.getdoc(factory) or "").split("\n", 1)[0]
        _LOSSES[name] = _Entry(factory, {**signature_defaults, **(defaults or {})}, space, source, summary)
        return factory

    return decorator


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
    )(entry.factory)


def available_losses() -> list[str]:
    """Sorted names of every registered loss."""
    return sorted(_LOSSES)


def _entry(name: str) -> _Entry:
    try:
        return _LOSSES[name]
    except KeyError:
        raise UnknownLossError(f"unknown loss {name!r}; choose one of: {', '.join(available_losses())}") from None


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

    Raises:
        UnknownLossError: ``name`` is not registered (the message lists the registered names).
        LossConfigError: an unknown keyword argument (the message lists the valid ones) or an invalid value.
    """
    entry = _entry(name)
    params = inspect.signature(entry.factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(sorted(params)) or "(none)"
        raise LossConfigError(f"loss {name!r} got unknown argument(s) {', '.join(unknown)}; valid: {valid}")
    return entry.factory(**{**entry.defaults, **kwargs})
