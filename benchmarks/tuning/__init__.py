"""Optuna studies over loss hyperparameters (PID gains) on SQLite, journal or PostgreSQL storage.

A study is declared in YAML (``configs/studies/*.yaml``, see :class:`StudySpec` and ``docs/tuning.md``). A trial is one
``benchmarks.runner.run_experiment`` with the base experiment's budget and the suggested parameters, in
``<out>/trials/<number>/``. Its validation metric is reported each epoch so a pruner can stop it early.

**Exact budgets across processes and machines.** The process that creates a study enqueues exactly ``n_trials``
WAITING trials ("tickets"). Workers only pop tickets (Optuna's pop is atomic in every storage); they never create a
fresh trial (:class:`QueueOnlyStorage`), so K local workers or workers on other machines against one PostgreSQL
database finish exactly ``n_trials`` trials between them. A trial whose worker died (no heartbeat for the grace period)
is failed and re-enqueued with the same parameters by Optuna's retry callback, so the study still reaches the budget.

One module per concept, imported one way (each imports only those above it)::

    spec       the study YAML, its search space, the experiment config of a trial
    storage    queue-only storages opened from a URL, the stale-trial retry callback
    study      create or join a study (tickets = budget), sampler, pruner, budget / best-trial queries
    objective  suggest, run a trial (experiment or synthetic), report epochs to the pruner
    workers    worker processes popping trials (spawned ones import the --import modules first)
    outputs    trials.csv, best.yaml, figures, summary.json, the terminal summary
    driver     tune(): all of the above for one command
"""

from __future__ import annotations

import warnings

import optuna

# Heartbeats, retries and the plots are "experimental" in Optuna 4 and warn on every use; the pin <5 keeps them stable.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

from .driver import tune  # noqa: E402
from .objective import (  # noqa: E402
    TrialFailure,
    experiment_runner,
    make_objective,
    metric_value,
    objective_values,
    report_epoch,
    suggest,
    suggest_one,
    synthetic_runner,
)
from .outputs import format_summary, study_summary, trials_frame, write_figures, write_results  # noqa: E402
from .spec import (  # noqa: E402
    LOSS_PARAMS_PREFIX,
    PRUNERS,
    SAMPLERS,
    ObjectiveSpec,
    ParamSpec,
    PrunerSpec,
    RunnerSpec,
    SamplerSpec,
    SearchSpaceSpec,
    StorageSpec,
    StudySpec,
    apply_params,
    base_config,
    load_study_spec,
    loss_search_space,
    param_name,
    resolve_search_space,
    validate_study,
)
from .storage import (  # noqa: E402
    QueueEmpty,
    QueueOnlyJournalStorage,
    QueueOnlyRDBStorage,
    QueueOnlyStorage,
    default_storage_url,
    open_storage,
    redact_url,
    with_available_driver,
)
from .study import (  # noqa: E402
    BUDGET_ATTR,
    FINISHED_STATES,
    best_trial,
    budget_trials,
    build_pruner,
    build_sampler,
    create_or_join_study,
    grid_points,
    stale_trial_numbers,
    trial_tickets,
)
from .workers import WorkerJob, build_objective, job_search_space, run_worker, run_workers, worker_seed  # noqa: E402

__all__ = [
    "BUDGET_ATTR",
    "FINISHED_STATES",
    "LOSS_PARAMS_PREFIX",
    "PRUNERS",
    "SAMPLERS",
    "ObjectiveSpec",
    "ParamSpec",
    "PrunerSpec",
    "QueueEmpty",
    "QueueOnlyJournalStorage",
    "QueueOnlyRDBStorage",
    "QueueOnlyStorage",
    "RunnerSpec",
    "SamplerSpec",
    "SearchSpaceSpec",
    "StorageSpec",
    "StudySpec",
    "TrialFailure",
    "WorkerJob",
    "apply_params",
    "base_config",
    "best_trial",
    "budget_trials",
    "build_objective",
    "build_pruner",
    "build_sampler",
    "create_or_join_study",
    "default_storage_url",
    "experiment_runner",
    "format_summary",
    "grid_points",
    "job_search_space",
    "load_study_spec",
    "loss_search_space",
    "make_objective",
    "metric_value",
    "objective_values",
    "open_storage",
    "param_name",
    "redact_url",
    "report_epoch",
    "resolve_search_space",
    "run_worker",
    "run_workers",
    "stale_trial_numbers",
    "study_summary",
    "suggest",
    "suggest_one",
    "synthetic_runner",
    "trial_tickets",
    "trials_frame",
    "tune",
    "validate_study",
    "with_available_driver",
    "worker_seed",
    "write_figures",
    "write_results",
]
