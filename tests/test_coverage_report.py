"""scripts/coverage_by_package.py: one row per package of the measured sources (found on disk), and the total."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_every_package_has_a_row_and_the_total(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from coverage_by_package import packages
    finally:
        sys.path.remove(str(REPO / "scripts"))
    found = packages()
    # every folder of measured .py files, nested ones included (console/agent was once left out)
    assert {"core", "core/backends", "console", "console/agent", "console/screens", "emulator", "enclave_app"} <= set(found)
    data = tmp_path / ".coverage"
    run = subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data}", "--rcfile=pyproject.toml",
                          "-m", "console", "--version", "--backend", "emulator"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    done = subprocess.run([sys.executable, "scripts/coverage_by_package.py", str(data)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: float(line.split()[-1].rstrip("%")) for line in done.stdout.splitlines()[1:]}
    assert list(rows) == [*found, "total"]
    assert rows["console"] > 0 and rows["core/backends"] > 0 and 0 < rows["total"] < 100
