"""``tune``: create (or join) a study, run its workers until the budget is finished, write the results."""

from __future__ import annotations

import os
import socket
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.plugins import imported_specs
from lss_vlm.errors import ConfigError

from .outputs import study_summary, write_results
from .spec import StudySpec, validate_study
from .storage import default_storage_url, open_storage
from .study import BUDGET_ATTR, build_sampler, create_or_join_study, trial_tickets
from .workers import WorkerJob, job_search_space, run_workers, worker_seed


def tune(
    spec: StudySpec,
    n_trials: int,
    out_dir: str | os.PathLike[str],
    storage_url: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    sampler: str | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    figures: bool = True,
) -> dict[str, Any]:
    """Create (or join) the study, run ``workers`` local workers until its budget is finished, write the results.

    Returns the summary (also in ``<out>/summary.json``). Running the same call on other machines against the same
    PostgreSQL URL adds workers to the study; the budget is the one given by the process that created it. Spawned
    workers first import the modules this process imported with ``lss-bench --import``
    (:func:`benchmarks.plugins.imported_specs`).
    """
    if n_trials < 1:
        raise ConfigError(f"--n-trials {n_trials}: expected at least 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    start = time.monotonic()
    validate_study(spec, overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url or default_storage_url(out_dir)
    name = study_name or spec.name
    job = WorkerJob(
        imports=imported_specs(),
        spec=spec,
        study_name=name,
        storage_url=url,
        out_dir=out_dir,
        sampler=sampler,
        seed=seed,
        overrides=list(overrides),
    )
    space = job_search_space(job)
    storage = open_storage(url, spec.storage)
    sampler_obj = build_sampler(spec, space, sampler, worker_seed(job))
    tickets = trial_tickets(spec, space, n_trials, sampler, worker_seed(job))
    study, created = create_or_join_study(spec, storage, name, tickets, sampler_obj)
    if not created:
        print(
            f"lss-bench tune: joined the existing study {name!r} (budget {study.user_attrs[BUDGET_ATTR]} trials, "
            f"set by the process that created it; --n-trials {n_trials} is not used)",
            file=sys.stderr,
        )
    offset = 0 if created else 1000 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 100_000
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    jobs = [job.model_copy(update={"worker_index": offset + i, "threads": threads}) for i in range(workers)]
    exit_codes = run_workers(jobs)
    for index, code in enumerate(exit_codes):
        if code:
            print(f"lss-bench tune: worker {index} exited with code {code}", file=sys.stderr)
    summary = study_summary(study, spec, url, time.monotonic() - start, workers)
    write_results(study, spec, space, out_dir, summary, overrides, figures)
    return summary
