"""enclave_app.packaging: a deterministic rootfs and the payload's build request."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.eif.build import build_eif
from core.errors import UsageError
from enclave_app.packaging import (
    PAYLOAD_BUILD_TIME,
    PAYLOAD_CMD,
    payload_build_request,
    prepare_rootfs,
    source_files,
)
from tests.conftest import REPO


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (st.st_mode, int(st.st_mtime), digest)
    return out


def test_rootfs_is_deterministic_and_holds_only_sources(tmp_path: Path) -> None:
    snap = tmp_path / "src"
    for rel in source_files():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes((REPO / rel).read_bytes())
    (snap / "core" / "__pycache__").mkdir()
    (snap / "core" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (snap / "core" / "notes.txt").write_text("not copied")
    first = _tree(prepare_rootfs(PAYLOAD_BUILD_TIME, dest=tmp_path / "a", repo=snap))
    os.utime(snap / "core" / "channel" / "protocol.py", (1, 1))  # source mtimes do not leak into the image
    second = _tree(prepare_rootfs(PAYLOAD_BUILD_TIME, dest=tmp_path / "a", repo=snap))
    assert first == second
    files = [name for name, (_, _, digest) in first.items() if digest != "dir"]
    assert "app/enclave_app/server.py" in files and "app/core/channel/protocol.py" in files
    # only the enclave-safe part of core is measured into the image
    assert not any(name.startswith(("app/core/ops/", "app/core/eif/", "app/core/backends/", "app/core/up/")) for name in files)
    assert all(name.endswith(".py") for name in files)
    assert not any("__pycache__" in name or name.endswith(".txt") for name in first)
    assert {mtime for _, mtime, _ in first.values()} == {1767225600}


def test_rootfs_runs_the_payload_on_its_own(tmp_path: Path) -> None:
    # the payload imports only from the copied sources: the repository (which the editable install puts on
    # sys.path) is shadowed by PYTHONPATH, so a module the rootfs lacks fails to import here
    app = prepare_rootfs(PAYLOAD_BUILD_TIME, dest=tmp_path) / "app"
    modules = sorted(p.stem for p in (REPO / "enclave_app").glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = f"import importlib, core; assert core.__file__.startswith({str(app)!r}); "
    code += "; ".join(f"importlib.import_module('enclave_app.{m}')" for m in modules)
    res = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(app)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_build_request(nd_home: Path) -> None:
    req = payload_build_request(str(nd_home / "p.eif"))
    assert req.cmd == PAYLOAD_CMD and req.rootfs and Path(req.rootfs).is_relative_to(nd_home)
    assert "PYTHONPATH=/app" in req.env and "PYTHONUNBUFFERED=1" in req.env
    assert req.name == "nitrodeck-payload" and req.payload
    with pytest.raises(UsageError, match="ISO 8601"):
        payload_build_request(str(nd_home / "p.eif"), build_time="yesterday")


def test_same_sources_build_the_same_eif(nd_home: Path, tmp_path: Path) -> None:
    snap = tmp_path / "src"
    for rel in source_files():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes((REPO / rel).read_bytes())
    first, second = (
        build_eif(payload_build_request(str(tmp_path / f"{n}.eif"), repo=snap), build_time=PAYLOAD_BUILD_TIME)
        for n in ("one", "two")
    )
    assert first.measurements.pcrs() == second.measurements.pcrs()
    assert (tmp_path / "one.eif").read_bytes() == (tmp_path / "two.eif").read_bytes()
    (snap / "enclave_app" / "server.py").write_text(
        (snap / "enclave_app" / "server.py").read_text() + "\n# changed\n"
    )
    third = build_eif(
        payload_build_request(str(tmp_path / "three.eif"), repo=snap), build_time=PAYLOAD_BUILD_TIME
    )
    assert third.measurements.pcr2 != first.measurements.pcr2
