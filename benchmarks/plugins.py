"""User code for ``lss-bench --import MODULE``: the modules that register a researcher's own losses or models.

``MODULE`` is an importable name (``my_pkg.losses``; the current folder is searched too, as ``python -m`` does) or
the path of a ``.py`` file (imported under its file name, ``my_loss.py`` -> ``my_loss``). Importing runs the module's
``@register_loss`` / ``MODELS.register`` calls. The specs imported so far are remembered
(:func:`imported_specs`) so that every worker process the harness spawns (``tune --workers``) imports them again
before it builds a loss or a model (:func:`import_user_modules` in the child).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from lss_vlm.errors import ConfigError

_IMPORTED: list[str] = []  # normalised specs, in import order


def import_user_modules(specs: Sequence[str]) -> list[ModuleType]:
    """Import each module name or ``.py`` path of ``specs`` (once); returns the modules.

    Raises:
        ConfigError: a module that cannot be found or raises while importing; the message names it and the cause.
    """
    return [_import_one(spec) for spec in specs]


def imported_specs() -> list[str]:
    """The specs imported in this process so far (paths made absolute), for worker processes to import again."""
    return list(_IMPORTED)


def _import_one(spec: str) -> ModuleType:
    path = Path(spec).expanduser()
    if spec.endswith(".py") or os.sep in spec:
        if not path.is_file():
            raise ConfigError(f"--import {spec}: no such Python file")
        key = str(path.resolve())
        module = _import_file(path.resolve(), spec)
    else:
        key = spec
        module = _import_name(spec)
    if key not in _IMPORTED:
        _IMPORTED.append(key)
    return module


def _import_name(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:  # `python -m` semantics: a module in the current folder is found
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigError(
                f"--import {name}: no module named {exc.name!r} (give an installed module, one in the current "
                "folder, or a path to a .py file)"
            ) from None
        raise ConfigError(f"--import {name}: the module failed to import: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: any error is reported with the module's name
        raise ConfigError(f"--import {name}: the module failed to import: {type(exc).__name__}: {exc}") from None


def _import_file(path: Path, spec: str) -> ModuleType:
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return existing
    if not name.isidentifier():
        raise ConfigError(f"--import {spec}: the file name must be a Python identifier (e.g. my_loss.py)")
    if existing is not None:
        raise ConfigError(f"--import {spec}: a module {name!r} is already imported from elsewhere; rename the file")
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"--import {spec}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # registered first: pickling and "my_loss:Factory" names find it by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: any error is reported with the file's name
        del sys.modules[name]
        raise ConfigError(f"--import {spec}: the module failed to import: {type(exc).__name__}: {exc}") from None
    return module
