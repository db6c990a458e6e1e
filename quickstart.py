#!/usr/bin/env python3
"""Set up a local virtual environment (./.venv) on first use, then run the demo or the tests.

    python3 quickstart.py demo [lss-bench demo options]
    python3 quickstart.py test [pytest options]
    python3 quickstart.py lock       # refresh constraints.txt from a fresh, unconstrained install

Only the Python 3 standard library is needed to start. Installs use constraints.txt (the versions we tested), so an
upstream release cannot change what a fresh clone gets. The environment is (re)installed when pyproject.toml or
constraints.txt changes. Set LSS_VENV to use another environment folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LSS_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".lss-vlm-installed"
CONSTRAINTS = ROOT / "constraints.txt"
EXTRAS = "test,ray"


def _spec_hash() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    if CONSTRAINTS.is_file():
        digest.update(CONSTRAINTS.read_bytes())
    return digest.hexdigest()


def _pip(bin_dir: Path) -> list[str]:
    return [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-qq"]


def ensure_env() -> None:
    if STAMP.is_file() and STAMP.read_text().strip() == _spec_hash():
        return
    if not (BIN / "python").exists():
        print(f"[quickstart] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("[quickstart] installing lss-vlm and its dependencies (first run: a few minutes)", flush=True)
    constraints = ["-c", str(CONSTRAINTS)] if CONSTRAINTS.is_file() else []
    subprocess.run(_pip(BIN) + constraints + ["-e", f"{ROOT}[{EXTRAS}]"], check=True, cwd=ROOT)
    STAMP.write_text(_spec_hash())


def lock() -> int:
    """Install the project unconstrained into a throwaway venv and write its `pip freeze` to constraints.txt."""
    with tempfile.TemporaryDirectory(prefix="lss-lock-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
        print("[quickstart] resolving the newest compatible versions (a few minutes)", flush=True)
        subprocess.run(_pip(bin_dir) + [f"{ROOT}[{EXTRAS}]"], check=True, cwd=ROOT)
        frozen = subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    pins = [line for line in frozen if line and not line.lower().startswith(("lss-vlm", "lss_vlm", "-e "))]
    header = CONSTRAINTS.read_text().splitlines()[:2] if CONSTRAINTS.is_file() else []
    tmp_path = CONSTRAINTS.with_suffix(".txt.tmp")
    tmp_path.write_text("\n".join([*header, *pins]) + "\n")
    tmp_path.replace(CONSTRAINTS)
    print(f"[quickstart] wrote {len(pins)} pins to {CONSTRAINTS.name}; run the tests before committing it")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lock"}:
        print(__doc__.strip())
        return 2
    if argv[0] == "lock":
        return lock()
    ensure_env()
    if argv[0] == "demo":
        cmd = [str(BIN / "lss-bench"), "demo", *argv[1:]]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
