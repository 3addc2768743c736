"""`make bench` runs every benchmark in benchmarks/ (issue 13: README's performance table is what it prints)."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_make_bench_runs_every_benchmark() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "no bench target in the Makefile"
    run = set(re.findall(r"benchmarks/(\w+\.py)", recipe.group(1)))
    on_disk = {p.name for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert on_disk and run == on_disk, f"not run by make bench: {sorted(on_disk - run)}; missing: {sorted(run - on_disk)}"
