"""Executors of a suite's planned runs: one after the other in this process (``local``), or one Ray task per run
(``ray``) on a local or multi-node Ray cluster (docs/cluster.md).

Both go through :func:`benchmarks.suite.execute_run`, so a run trains in ``runs/<label>/seed<k>.partial/`` and is
renamed final once its ``status.json`` is written: the resume rules of a suite are the same on every backend. The Ray
executor adds a lock file per run (``runs/<label>/.seed<k>.lock``, on the shared suite folder) so two workers never
train the same run, and lets Ray retry a task whose worker died (``max_retries``): the retry resumes the run from its
last checkpoint. A run whose retries are used up is reported ``interrupted``; its partial folder stays and the next
``lss-bench compare`` resumes it.

Ray: Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018; https://docs.ray.io.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lss_vlm.errors import ConfigError

BACKENDS: tuple[str, ...] = ("local", "ray")
#: Ray retries of a run whose worker process died (the retry resumes from the run's last checkpoint).
RAY_MAX_RETRIES = 3


class Executor(Protocol):
    """Runs planned runs into a suite folder; calls ``begin`` before and ``finished`` after each (progress)."""

    def run(
        self,
        plans: Sequence[Any],
        out_dir: Path,
        runner: Callable[..., dict[str, float]],
        begin: Callable[[Any], None],
        finished: Callable[[Any], None],
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> list[Any]: ...


class LocalExecutor:
    """One run after the other in this process (today's behaviour, the default)."""

    def run(self, plans, out_dir, runner, begin, finished, on_epoch=None) -> list[Any]:
        from benchmarks.suite import execute_run

        outcomes = []
        for plan in plans:
            begin(plan)
            outcome = execute_run(plan, out_dir, runner, on_epoch=on_epoch)
            outcomes.append(outcome)
            finished(outcome)
        return outcomes


@dataclass
class RayExecutor:
    """One Ray task per run, ``num_cpus``/``num_gpus`` each (None: from the run's config, :func:`run_resources`).

    ``address``: an existing cluster (``ray start --head`` / ``auto`` / ``ray://host:10001``); None starts (or joins,
    when ``RAY_ADDRESS`` is set) a local one. The suite folder must be a path every worker sees (a shared filesystem).
    """

    address: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None

    def run(self, plans, out_dir, runner, begin, finished, on_epoch=None) -> list[Any]:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        from benchmarks.plugins import imported_specs

        imports = imported_specs()  # --import modules: the workers import them too
        pending: dict[Any, Any] = {}
        for plan in plans:
            cpus, gpus = run_resources(plan.config, self.num_cpus, self.num_gpus)
            task = ray.remote(_ray_run).options(num_cpus=cpus, num_gpus=gpus, max_retries=RAY_MAX_RETRIES)
            pending[task.remote(plan, str(Path(out_dir).resolve()), runner, cpus, imports)] = plan
            begin(plan)
        outcomes = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            plan = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.TaskCancelledError):
                outcome = interrupted(plan, "the Ray worker died after all retries; rerun to resume")
            except ray.exceptions.RayTaskError as exc:  # execute_run records run failures itself; this is the harness
                outcome = interrupted(plan, f"{type(exc.cause).__name__}: {exc.cause}")
            outcomes.append(outcome)
            finished(outcome)
        return outcomes


def import_ray() -> Any:
    """``import ray``, or a :class:`ConfigError` telling how to install the optional extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'lss-vlm[ray]' (or pip install ray)") from None
    return ray


def run_resources(cfg: Any, num_cpus: float | None, num_gpus: float | None) -> tuple[float, float]:
    """``(num_cpus, num_gpus)`` of one run: the given values, else from its config: 1 GPU when ``train.device`` is
    ``cuda`` (0 otherwise), 1 CPU plus one per data-loader worker."""
    cpus = float(num_cpus) if num_cpus is not None else 1.0 + cfg.data.num_workers
    gpus = float(num_gpus) if num_gpus is not None else (1.0 if cfg.train.device == "cuda" else 0.0)
    return cpus, gpus


def interrupted(plan: Any, reason: str) -> Any:
    """The outcome of a run that did not end (its partial folder stays for the next resume)."""
    from benchmarks.suite import RunOutcome

    return RunOutcome(plan, "interrupted", reason, 0.0, {})


def _ray_run(
    plan: Any, out_dir: str, runner: Callable[..., dict[str, float]], num_cpus: float, imports: Sequence[str]
) -> Any:
    """Body of one Ray task: import the user's modules, re-validate the config in this process (which registers the
    models and losses it names), lock the run, train it with ``num_cpus`` threads, return its outcome."""
    import dataclasses

    import torch
    from filelock import FileLock

    from benchmarks.config import config_from_dict
    from benchmarks.plugins import import_user_modules
    from benchmarks.suite import execute_run

    import_user_modules(list(imports))
    plan = dataclasses.replace(plan, config=config_from_dict(plan.config.model_dump(mode="json"), source=plan.label))
    torch.set_num_threads(max(1, int(num_cpus)))
    folder = Path(out_dir)
    lock = plan.final_dir(folder).parent / f".seed{plan.seed}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock, timeout=float(os.environ.get("LSS_RUN_LOCK_TIMEOUT_S", "600"))):
        return execute_run(plan, folder, runner)


def check_backend_options(
    backend: str, address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None
) -> None:
    """:class:`ConfigError` for an unknown backend, options the backend ignores, or a resource that is negative or not
    finite (checked before a dry run too; imports nothing)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "local":
        given = [name for name, v in (("--address", address), ("--num-cpus", num_cpus), ("--num-gpus", num_gpus)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)}: only used with --backend ray")
        return
    for name, value in (("--num-cpus", num_cpus), ("--num-gpus", num_gpus)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")


def make_executor(
    backend: str, address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None
) -> Executor:
    """The executor of ``--backend``; :class:`ConfigError` for an unknown name or options the backend ignores."""
    check_backend_options(backend, address, num_cpus, num_gpus)
    if backend == "local":
        return LocalExecutor()
    import_ray()
    return RayExecutor(address, num_cpus, num_gpus)
