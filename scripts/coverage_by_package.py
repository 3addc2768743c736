"""Print line+branch coverage per package from the .coverage file `make pytest` leaves behind.

pytest-cov prints the total (and fails below [tool.coverage.report] fail_under); this prints one row per
package, so a drop shows where it happened. The packages are every folder of Python files under the
measured sources ([tool.coverage.run] source), found on disk, so a new package gets its row without an
edit here. What is measured is the pytest process itself: code run in subprocesses (`python -m console
...`, nitro-emu, the enclave payload) is exercised by the suite but not counted (README, "Two commands on a fresh machine").
"""

from __future__ import annotations

import io
import sys
import tomllib
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent


def packages(root: Path = ROOT) -> list[str]:
    """Every folder under the measured sources that holds .py files, as a path relative to ``root``."""
    sources = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["coverage"]["run"]["source"]
    found = {py.parent.relative_to(root).as_posix() for src in sources for py in (root / src).rglob("*.py")}
    return sorted(found)


def main(argv: list[str]) -> int:
    data = Path(argv[0]) if argv else ROOT / ".coverage"
    if not data.exists():
        print("no .coverage file: run `make pytest` first", file=sys.stderr)
        return 1
    cov = coverage.Coverage(data_file=str(data), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    print(f"{'package':<20} {'line+branch coverage':>20}")
    for package in packages():
        # a package's own modules only: its subpackages have rows of their own
        include = [str(ROOT / package / "*.py")]
        try:
            percent = cov.report(include=include, file=io.StringIO())
        except coverage.exceptions.NoDataError:
            percent = 0.0  # nothing of it ran in the pytest process: a row of its own, not a gap
        print(f"{package:<20} {percent:>19.1f}%")
    print(f"{'total':<20} {cov.report(file=io.StringIO()):>19.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
