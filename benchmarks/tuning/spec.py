"""The study YAML (``configs/studies/*.yaml``, docs/tuning.md): its schema, the search space it resolves to and the
experiment configs of its trials (the base experiment plus the suggested parameters)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks.config import read_yaml_mapping
from lss_vlm.errors import ConfigError

LOSS_PARAMS_PREFIX = "loss.params."
SAMPLERS = ("tpe", "cmaes", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One searched parameter: ``float`` (optionally ``log``/``step``), ``int`` or ``categorical`` (``choices``).

    ``grid`` lists the values the grid sampler visits (default: ``choices``, or ``low``/``high`` for an int).
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        return self

    def grid_values(self) -> list[Any]:
        """The values the grid sampler visits."""
        if self.grid is not None:
            return list(self.grid)
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ValueError("the grid sampler needs a 'grid' list of values for a float or log-int parameter")


class SearchSpaceSpec(_Strict):
    """``params`` (dotted config key -> :class:`ParamSpec`) and/or ``from_loss`` (the loss's registered tunables)."""

    from_loss: bool = False
    exclude: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)


class ObjectiveSpec(_Strict):
    """A metric (validation key reported by the runner, e.g. ``val/dice/ligamentum_flavum``) and its direction."""

    metric: str = "val/dice/ligamentum_flavum"
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(_Strict):
    """``name`` (tpe default, nsga2 for several objectives), ``seed`` and keyword ``options`` of the sampler."""

    name: Literal["tpe", "cmaes", "random", "grid", "nsga2"] | None = None
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(_Strict):
    """``name`` (median, hyperband, none) and keyword ``options`` of the Optuna pruner."""

    name: Literal["median", "hyperband", "none"] = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class StorageSpec(_Strict):
    """Stale-trial detection (RDB storages): heartbeat every ``heartbeat_interval`` s, stale after ``grace_period``."""

    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 3
    sqlite_timeout: float = 60.0
    poll_interval: float = 2.0


class RunnerSpec(_Strict):
    """What a trial runs: ``experiment`` (a real training run) or ``synthetic``.

    ``synthetic`` is a fast stand-in objective for checking a storage or multi-machine setup without training:
    ``value = -mean(((x - centre) / (high - low))**2)`` over the numeric parameters (centre = middle of the range),
    reported over ``epochs`` epochs with ``sleep_s`` seconds each; trials whose number ``n`` has
    ``n % fail_every == fail_every - 1`` raise (to exercise failure recording); 0 never fails.
    """

    name: Literal["experiment", "synthetic"] = "experiment"
    epochs: int = 3
    sleep_s: float = 0.0
    fail_every: int = 0


class StudySpec(_Strict):
    """A study YAML file, resolved: the base experiment, objectives, search space, sampler, pruner, storage, runner.

    ``overrides`` (``key=value``) apply to the trials and to ``best.yaml``; ``trial_overrides`` to the trials only
    (e.g. ``eval.text_metrics=false`` to skip the final CIDEr scoring that the objective does not use).
    """

    path: Path
    experiment: Path | None = None
    overrides: list[str] = Field(default_factory=list)
    trial_overrides: list[str] = Field(default_factory=list)
    study_name: str | None = None
    objectives: list[ObjectiveSpec] = Field(default_factory=lambda: [ObjectiveSpec()])
    search_space: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)

    @field_validator("objectives")
    @classmethod
    def _at_least_one(cls, value: list[ObjectiveSpec]) -> list[ObjectiveSpec]:
        if not value:
            raise ValueError("at least one objective is needed")
        return value

    @property
    def name(self) -> str:
        return self.study_name or self.path.stem

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def load_study_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read a study YAML file. ``objective:`` (one) or ``objectives:`` (a list) name the metric(s) to optimise;
    ``experiment:`` is resolved relative to the study file. Raises :class:`ConfigError` naming the file and field."""
    path = Path(path)
    raw = read_yaml_mapping(path, "study", "study settings")
    if "objective" in raw:
        if "objectives" in raw:
            raise ConfigError(f"{path}: give either 'objective' or 'objectives', not both")
        raw["objectives"] = [raw.pop("objective")]
    if raw.get("experiment") is not None:
        raw["experiment"] = (path.parent / str(raw["experiment"])).resolve()
    try:
        spec = StudySpec(path=path, **raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
    if spec.runner.name == "experiment" and spec.experiment is None:
        raise ConfigError(f"{path}: field 'experiment' (the base experiment config) is required")
    return spec


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"field '{where}': {err['msg']} (got {err.get('input')!r})"


def param_name(key: str) -> str:
    """The Optuna parameter name of a dotted config key: ``loss.params.kp`` -> ``kp``, others unchanged."""
    return key[len(LOSS_PARAMS_PREFIX) :] if key.startswith(LOSS_PARAMS_PREFIX) else key


def loss_search_space(loss_name: str) -> dict[str, ParamSpec]:
    """The registered tunables of a loss (``losses.loss_spec``) as dotted ``loss.params.<name>`` keys."""
    import losses

    spec = losses.loss_spec(loss_name)
    space = spec.get("search_space", spec.get("tunables", {})) if isinstance(spec, dict) else spec.search_space
    return {f"{LOSS_PARAMS_PREFIX}{name}": ParamSpec(**dict(dist)) for name, dist in space.items()}


def resolve_search_space(spec: StudySpec, loss_name: str | None) -> dict[str, ParamSpec]:
    """Dotted config key -> :class:`ParamSpec`: the loss's tunables (``from_loss``) updated by explicit ``params``."""
    space: dict[str, ParamSpec] = {}
    if spec.search_space.from_loss:
        if not loss_name:
            raise ConfigError(f"{spec.path}: search_space.from_loss needs a base experiment with loss.name")
        try:
            space.update(loss_search_space(loss_name))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{spec.path}: search_space.from_loss: loss {loss_name!r}: {exc}") from None
    space.update(spec.search_space.params)
    for key in spec.search_space.exclude:
        space.pop(key, None) or space.pop(f"{LOSS_PARAMS_PREFIX}{key}", None)
    if not space:
        raise ConfigError(f"{spec.path}: field 'search_space' declares no parameter to search")
    names = [param_name(k) for k in space]
    if len(set(names)) != len(names):
        raise ConfigError(f"{spec.path}: search_space: two keys share a parameter name: {sorted(space)}")
    return space


def base_config(spec: StudySpec, extra_overrides: Sequence[str] = ()) -> Any:
    """The base :class:`benchmarks.config.ExperimentConfig` of the study (file + study overrides + CLI ``--set``)."""
    from benchmarks.config import load_config

    return load_config(spec.experiment, [*spec.overrides, *extra_overrides])


def apply_params(cfg: Any, params: dict[str, Any]) -> Any:
    """A copy of ``cfg`` with dotted keys (``loss.params.kp``) set to the given values, validated again."""
    from benchmarks.config import config_from_dict

    data = cfg.model_dump(mode="json")
    for key, value in params.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"search_space: config key {key!r} does not exist ({part!r} is not a section)")
            node = node[part]
        node[leaf] = value
    return config_from_dict(data, source=f"trial params {params}")


def validate_study(spec: StudySpec, overrides: Sequence[str] = ()) -> dict[str, ParamSpec]:
    """Check everything a trial will need before any study or output exists; returns the search space.

    The base experiment must load with the study's and the command's ``--set`` overrides, and a config with every
    searched key set to its lowest value (first choice) must validate, so a typo fails here with one
    :class:`ConfigError` instead of failing every trial of a study that then cannot be rerun.
    """
    needs_config = spec.runner.name == "experiment" or spec.search_space.from_loss
    cfg = base_config(spec, [*overrides, *spec.trial_overrides]) if needs_config else None
    space = resolve_search_space(spec, cfg.loss.name if cfg is not None else None)
    if cfg is not None and spec.runner.name == "experiment":
        from benchmarks.run_status import check_inputs

        check_inputs(apply_params(cfg, {key: _probe_value(p) for key, p in space.items()}))
    return space


def _probe_value(p: ParamSpec) -> Any:
    """A value inside the declared range of one parameter (its first choice, or its low end)."""
    if p.type == "categorical":
        return p.choices[0]
    return int(p.low) if p.type == "int" else float(p.low)
