"""lss-bench tune against a real PostgreSQL server started for the test session (Debian's ``postgresql`` package).

Skips with the reason when no server binaries are installed or the server does not start (``.ci/run`` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuning_helpers import assert_exact_budget, load_trials, run_tune, summary_of, write_synthetic_study

pytestmark = pytest.mark.postgres


def _postgres_bindir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    candidates = [os.path.dirname(on_path)] if on_path else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for directory in candidates:
        if os.access(os.path.join(directory, "initdb"), os.X_OK) and os.access(
            os.path.join(directory, "pg_ctl"), os.X_OK
        ):
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(directory: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user (which must own ``directory``)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server")
    shutil.chown(directory, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free local port; yields its SQLAlchemy URL and stops it at the end."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 (the PostgreSQL driver) is not installed: pip install lss-vlm[test]"
    )
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="lss-vlm-postgres-"))
    os.chmod(root, 0o700)
    prefix = _as_server_user(root)
    data, port = root / "data", _free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"]
    try:
        for command in (initdb, start):
            result = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
                pytest.skip(f"PostgreSQL did not start ({command[0]}): {(result.stderr + log).strip()[-500:]}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_three_worker_processes_share_an_exact_budget(tmp_path: Path, postgres_url: str) -> None:
    study = write_synthetic_study(tmp_path, epochs=2, sleep_s=0.5, fail_every=3)
    out = tmp_path / "out"
    args = ("--n-trials", "9", "--workers", "3", "--storage", postgres_url, "--study", "synthetic", "--out", str(out))
    result = run_tune(study, *args, "--no-figures")
    assert result.returncode == 0, result.stderr[-2000:]
    trials = load_trials(postgres_url)
    assert_exact_budget(trials, 9, fail_every=3)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # the trials really were shared
    summary = summary_of(out)
    assert summary["storage"].endswith(postgres_url.split("://")[1]) and summary["states"] == {
        "complete": 6,
        "pruned": 0,
        "fail": 3,
    }
    assert "9/9 trials" in result.stdout and "3 failed" in result.stdout
