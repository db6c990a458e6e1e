#!/usr/bin/env python3
"""Set up a local virtual environment (./.venv) on first use, then run the demo or the tests.

    python3 quickstart.py demo [lss-bench demo options]
    python3 quickstart.py test [pytest options]

Only the Python 3 standard library is needed to start. The environment is (re)installed when pyproject.toml
changes. Set LSS_VENV to use another environment folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LSS_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".lss-vlm-installed"


def _spec_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env() -> None:
    if STAMP.is_file() and STAMP.read_text().strip() == _spec_hash():
        return
    if not (BIN / "python").exists():
        print(f"[quickstart] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("[quickstart] installing lss-vlm and its dependencies (first run: a few minutes)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-qq"]
    subprocess.run(pip + ["-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(_spec_hash())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__.strip())
        return 2
    ensure_env()
    if argv[0] == "demo":
        cmd = [str(BIN / "lss-bench"), "demo", *argv[1:]]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
