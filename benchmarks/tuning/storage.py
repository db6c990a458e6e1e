"""Optuna storages that only run enqueued trials (exact budgets), opened from a URL: SQLite, journal file, PostgreSQL.

Workers only pop WAITING trials ("tickets"); they never create a fresh one (:class:`QueueOnlyStorage`). RDB storages
get a heartbeat, and the trials of a dead worker are failed and re-enqueued by Optuna's retry callback."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from lss_vlm.errors import ConfigError

from .spec import StorageSpec


class QueueEmpty(Exception):
    """Raised by :class:`QueueOnlyStorage` when a worker asks for a trial and no WAITING trial is left."""


class QueueOnlyStorage:
    """Storage mixin: trials come only from the queue (enqueued templates), never fresh, so budgets are exact."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            raise QueueEmpty("no WAITING trial left in the study")
        return super().create_new_trial(study_id, template_trial)  # type: ignore[misc]


class QueueOnlyRDBStorage(QueueOnlyStorage, optuna.storages.RDBStorage):
    """An :class:`optuna.storages.RDBStorage` (SQLite, PostgreSQL, MySQL) that only runs enqueued trials.

    Optuna wraps an RDB storage in a cache that calls ``_create_new_trial`` directly, so that is guarded too.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is None:
            raise QueueEmpty("no WAITING trial left in the study")
        return super()._create_new_trial(study_id, template_trial)


class QueueOnlyJournalStorage(QueueOnlyStorage, optuna.storages.JournalStorage):
    """An :class:`optuna.storages.JournalStorage` that only runs enqueued trials."""


def default_storage_url(out_dir: Path) -> str:
    """SQLite in the output directory: ``sqlite:///<out>/study.db``."""
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def open_storage(url: str, settings: StorageSpec | None = None) -> optuna.storages.BaseStorage:
    """The storage for ``url``: ``journal:PATH`` (journal file), ``sqlite:///PATH`` (busy timeout) or any SQLAlchemy
    URL (``postgresql://user@host/db``). RDB storages get a heartbeat and retry the trials of dead workers."""
    settings = settings or StorageSpec()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return QueueOnlyJournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected an SQLAlchemy URL (sqlite:///PATH, postgresql://...) or journal:PATH"
        )
    url = with_available_driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": settings.sqlite_timeout}}
        db_path = url.split(":///", 1)[-1].split("?", 1)[0]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return QueueOnlyRDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            **{RETRY_KWARG: RETRY_CALLBACK(max_retry=settings.max_retry)},
        )
    except ImportError as exc:
        raise ConfigError(f"--storage {redact_url(url)}: database driver missing ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.ArgumentError / OperationalError: bad URL or unreachable server
        raise ConfigError(f"--storage {redact_url(url)}: cannot open ({type(exc).__name__}: {exc})") from None


if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9 renamed the callback
    RETRY_CALLBACK, RETRY_KWARG = optuna.storages.RetryHeartbeatStaleTrialCallback, "heartbeat_stale_trial_callback"
else:  # pragma: no cover - Optuna 4.0-4.8
    RETRY_CALLBACK, RETRY_KWARG = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"


def with_available_driver(url: str) -> str:
    """``postgresql://`` with the installed driver named: SQLAlchemy 2.1 defaults to psycopg 3, many have psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}{sep}{rest}"
    return url


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
