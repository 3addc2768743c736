"""`nitrodeck build --build-time` pins the EIF's BuildTime, so the same inputs give the same bytes."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.backend import select_backend
from core.driver import build_args
from core.errors import UsageError
from core.models import BuildRequest


def _build(home: Path, out: Path, rootfs: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "console", "build", "--rootfs", str(rootfs), "--cmd", "/bin/app",
         "--output-file", str(out), "--json", *extra],
        check=True, capture_output=True, timeout=120,
    )


def test_fixed_build_time_gives_identical_bytes(nd_home: Path) -> None:
    rootfs = nd_home / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    a, b, c = nd_home / "a.eif", nd_home / "b.eif", nd_home / "c.eif"
    _build(nd_home, a, rootfs, "--build-time", "2025-01-02T03:04:05Z")
    _build(nd_home, b, rootfs, "--build-time", "2025-01-02T03:04:05Z")
    _build(nd_home, c, rootfs, "--build-time", "2025-06-01T00:00:00Z")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # BuildTime is in the (unmeasured) metadata section


def test_build_time_is_emulator_only() -> None:
    req = BuildRequest(output_file="x.eif", docker_uri="app:latest", build_time="2025-01-01T00:00:00Z")
    assert "--build-time" in build_args(req, select_backend("emulator"))
    with pytest.raises(UsageError, match="only supported by the emulator"):
        build_args(req, select_backend("real"))
