"""Benchmark: start-up of `nitrodeck --help` and `nitrodeck status --json` against `python3 -c "import json"`.

Each command runs --runs times, alternating with the baseline so that machine load hits all alike;
the best wall time of each is compared. Targets (issue 13): --help within 3x the baseline,
status --json within 6x (on the emulator its describe-enclaves is answered in-process, no subprocess).

    .venv/bin/python benchmarks/startup.py [--runs 15]

Not a test: timings depend on the machine. status runs against an empty temporary NITRODECK_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="nds-", dir="/tmp")
    env = {**os.environ, "NITRODECK_HOME": home, "NITRODECK_BACKEND": "emulator"}
    # the warm-up writes .pyc files as an installed package has them (pip compiles at install);
    # PYTHONDONTWRITEBYTECODE in the caller's environment would have every run compile from source
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    py = sys.executable
    contenders = {
        'python3 -c "import json"': [py, "-c", "import json"],
        "nitrodeck --help": [py, "-m", "console", "--help"],
        "nitrodeck status --json": [py, "-m", "console", "status", "--json"],
    }
    best = {name: float("inf") for name in contenders}
    try:
        for argv in contenders.values():
            wall(argv, env)  # warm caches and .pyc files
        for _ in range(args.runs):
            for name, argv in contenders.items():
                best[name] = min(best[name], wall(argv, env))
    finally:
        subprocess.run([py, "-m", "emulator", "terminate-enclave", "--all"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    base = best['python3 -c "import json"']
    targets = {"nitrodeck --help": 3.0, "nitrodeck status --json": 6.0}
    print(f"baseline python3 -c 'import json': {1000 * base:.0f} ms (best of {args.runs})")
    for name, target in targets.items():
        print(f"{name}: {1000 * best[name]:.0f} ms, ratio {best[name] / base:.2f} (target <= {target:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
