"""Audit log: one JSON line per mutating action, right fields, no secrets, capped, safe under concurrency."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core.ops.audit import MASK, AuditLog, redact


def test_fields(nd_home: Path) -> None:
    log = AuditLog()
    log.record("launch", ["nitro-emu", "run-enclave", "--memory", "512"], ok=True, backend="emulator")
    log.record("terminate", ["nitro-emu", "terminate-enclave"], ok=False, code="E11", backend="emulator")
    lines = (nd_home / "audit.log").read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert set(first) == {"time", "user", "action", "argv", "result", "code", "backend"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["user"] and first["action"] == "launch" and first["result"] == "ok" and first["code"] is None
    assert second["result"] == "error" and second["code"] == "E11" and second["backend"] == "emulator"
    assert (nd_home / "audit.log").stat().st_mode & 0o077 == 0
    assert [e["action"] for e in log.entries()] == ["launch", "terminate"]


def test_secrets_masked(nd_home: Path) -> None:
    log = AuditLog()
    log.record("build", ["build-enclave", "--private-key", "arn:aws:kms:secret", "--token=abc"], ok=True)
    text = (nd_home / "audit.log").read_text()
    assert "arn:aws:kms:secret" not in text and "abc" not in text and MASK in text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=10), st.text(min_size=1, max_size=12))
def test_redact_never_leaks(prefix: list[str], secret: str) -> None:
    argv = [*prefix, "--private-key", secret]
    out = redact(argv)
    assert out[-1] == MASK and len(out) == len(argv)


def test_rotation_cap(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=2000)
    for i in range(40):
        log.record("launch", ["x" * 50, str(i)], ok=True)
    assert (tmp_path / "audit.log").stat().st_size <= 2000
    assert (tmp_path / "audit.log.1").exists()
    assert log.entries()[-1]["argv"][-1] == "39"


def _writer(path: str, n: int) -> None:
    log = AuditLog(Path(path))
    for i in range(n):
        log.record("launch", ["y" * 3000, str(i)], ok=True)


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), 30)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_text().splitlines()
    assert len(lines) == 90
    assert all(json.loads(line)["action"] == "launch" for line in lines)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")), max_size=10))
def test_entries_skip_garbage(tmp_path_factory, junk: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("audit") / "audit.log"
    log = AuditLog(path)
    log.record("launch", ["a"], ok=True)
    with open(path, "a", encoding="utf-8", errors="replace") as fh:
        fh.write("\n".join(j.replace("\n", " ") for j in junk) + "\n")
    log.record("terminate", ["b"], ok=True)
    actions = [e.get("action") for e in log.entries()]
    assert actions[0] == "launch" and actions[-1] == "terminate"
