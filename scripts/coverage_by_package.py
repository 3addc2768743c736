"""Print line+branch coverage per package from the .coverage file `make pytest` leaves behind.

pytest-cov prints the total (and fails below [tool.coverage.report] fail_under); this prints one row per
package, so a drop shows where it happened. What is measured is the pytest process itself: code run in
subprocesses (`python -m console ...`, nitro-emu, the enclave payload) is exercised by the suite but not
counted (see docs/testing in README: "Coverage").
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import coverage

PACKAGES = (
    "core", "core/crypto", "core/channel", "core/eif", "core/attest", "core/kms", "core/backends", "core/ops",
    "core/up", "console", "console/screens", "console/widgets", "emulator", "enclave_app",
)


def main() -> int:
    data = Path(".coverage")
    if not data.exists():
        print("no .coverage file: run `make pytest` first", file=sys.stderr)
        return 1
    cov = coverage.Coverage(data_file=str(data))
    cov.load()
    print(f"{'package':<18} {'line+branch coverage':>20}")
    for package in PACKAGES:
        # a package's own modules (core: the root files only, its subpackages have their own rows)
        include = [f"*/{package}/*.py"] if package != "core" else ["*/core/[a-z]*.py"]
        try:
            percent = cov.report(include=include, file=io.StringIO())
        except coverage.exceptions.NoDataError:
            continue
        print(f"{package:<18} {percent:>19.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
