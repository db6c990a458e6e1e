"""Worker processes: each pops and runs the study's trials until none is left; K local ones run in ``spawn`` processes.

A spawned worker starts from a fresh interpreter, so it first imports the user modules of ``lss-bench --import``
(:attr:`WorkerJob.imports`) before it builds a loss or a model."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, Field

from .objective import experiment_runner, make_objective, synthetic_runner
from .spec import ParamSpec, StudySpec, base_config, resolve_search_space
from .storage import QueueEmpty, open_storage
from .study import build_pruner, build_sampler


class WorkerJob(BaseModel):
    """Everything one worker process needs (picklable for ``spawn``)."""

    spec: StudySpec
    study_name: str
    storage_url: str
    out_dir: Path
    sampler: str | None = None
    seed: int | None = None
    worker_index: int = 0
    overrides: list[str] = Field(default_factory=list)
    threads: int | None = None
    imports: list[str] = Field(default_factory=list, description="--import modules a spawned worker imports first")


def build_objective(job: WorkerJob, space: dict[str, ParamSpec]) -> Callable[[optuna.Trial], Any]:
    """The objective of the job's runner (experiment or synthetic)."""
    if job.spec.runner.name == "synthetic":
        return make_objective(synthetic_runner(job.spec, space), space)
    return make_objective(experiment_runner(job.spec, job.out_dir, job.overrides), space)


def job_search_space(job: WorkerJob) -> dict[str, ParamSpec]:
    """The job's search space (the base config is loaded only when the loss's tunables are needed)."""
    loss_name = base_config(job.spec, job.overrides).loss.name if job.spec.search_space.from_loss else None
    return resolve_search_space(job.spec, loss_name)


def worker_seed(job: WorkerJob) -> int:
    """Worker 0 uses the seed itself (same seed + one worker = same suggestions); worker k uses ``seed + k``."""
    base = job.spec.sampler.seed if job.seed is None else job.seed
    return base + job.worker_index


def run_worker(job: WorkerJob) -> int:
    """Pop and run trials of the study until none is waiting or running; returns the number of trials it ran."""
    if job.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(job.threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(job.threads)
    space = job_search_space(job)
    storage = open_storage(job.storage_url, job.spec.storage)
    sampler = build_sampler(job.spec, space, job.sampler, worker_seed(job))
    study = optuna.load_study(
        study_name=job.study_name, storage=storage, sampler=sampler, pruner=build_pruner(job.spec)
    )
    objective = build_objective(job, space)
    counter = _TrialCounter()
    heartbeat = isinstance(storage, optuna.storages.RDBStorage)
    while True:
        with contextlib.suppress(QueueEmpty):
            study.optimize(objective, catch=(Exception,), callbacks=[counter], gc_after_trial=True)
        if not _should_wait(study, heartbeat):
            return counter.n
        time.sleep(job.spec.storage.poll_interval)
        optuna.storages.fail_stale_trials(study)


class _TrialCounter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.n += 1


def _should_wait(study: optuna.Study, heartbeat: bool) -> bool:
    """Whether trials are still waiting, or running under a heartbeat (they finish or go stale and are retried).

    Without a heartbeat (journal storage) a dead worker's RUNNING trial would never end, so workers stop waiting.
    """
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return True
    return heartbeat and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _spawned_worker(job: WorkerJob) -> None:
    from benchmarks.plugins import import_user_modules

    import_user_modules(job.imports)  # a fresh interpreter: the user's losses and models are registered again
    run_worker(job)


def run_workers(jobs: list[WorkerJob]) -> list[int]:
    """Run one job in this process, or each in its own ``spawn`` process; returns the exit codes."""
    if len(jobs) == 1:
        run_worker(jobs[0])
        return [0]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_spawned_worker, args=(job,), name=f"tune-worker-{job.worker_index}") for job in jobs
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    return [int(process.exitcode or 0) for process in processes]
