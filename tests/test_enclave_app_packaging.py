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
    # only what the payload imports is measured into the image
    assert not any(name.startswith(("app/core/ops/", "app/core/eif/", "app/core/backends/", "app/core/up/")) for name in files)
    assert sorted(files) == sorted(f"app/{rel}" for rel in source_files())
    assert all(name.endswith(".py") for name in files)
    assert not any("__pycache__" in name or name.endswith(".txt") for name in first)
    assert {mtime for _, mtime, _ in first.values()} == {1767225600}


def test_rootfs_runs_the_payload_on_its_own(tmp_path: Path) -> None:
    # the payload imports only from the copied sources: the repository (which the editable install puts on
    # sys.path) is shadowed by PYTHONPATH, so a module the rootfs lacks fails to import here
    app = prepare_rootfs(PAYLOAD_BUILD_TIME, dest=tmp_path) / "app"
    modules = sorted(p.stem for p in (REPO / "enclave_app").glob("*.py")
                     if p.stem not in ("__init__", "__main__", "packaging"))  # packaging runs on the parent
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


def payload_closure() -> set[str]:
    """The files the payload can load: every enclave_app module but packaging, what they import (lazy and
    optional imports too, read with ast), and each one's package __init__ files, which Python runs first."""
    from tests.test_layers import all_modules, graph

    mods, edges = all_modules(), graph()
    todo = [m for m in mods if m.split(".")[0] == "enclave_app" and m != "enclave_app.packaging"]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += [imported for imported, _ in edges.get(module, [])]
    return {str(mods[m].relative_to(REPO)) for m in seen}


def test_image_carries_exactly_what_the_payload_imports() -> None:
    # PCR0 measures every file in the image: a module the payload never loads only widens what must be trusted
    shipped = {str(rel) for rel in source_files()}
    needed = payload_closure()
    assert needed - shipped == set(), f"the payload imports these but the image lacks them: {sorted(needed - shipped)}"
    assert shipped - needed == set(), f"the image carries these but the payload never imports them: {sorted(shipped - needed)}"
    # the payload loads only its half of core.kms: policies and wallet keys are made on the parent
    assert not {"core/kms/policy.py", "core/kms/wallet.py", "core/attest/verify.py"} & shipped
