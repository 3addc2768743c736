"""The lifecycle journal: append/read, torn lines, rotation, concurrent writers, a full disk, --since."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UsageError
from core.ops.journal import Journal, make_event, parse_line, parse_since
from tests.conftest import is_root, require


def test_append_read_filter(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append("launched", enclave_id="i-1-enc1a2b3c4d", name="web", eif_path="/x.eif", pcr0="a" * 96, cid=16)
    j.append("exited", enclave_id="i-1-enc1a2b3c4d", name="web", uptime_s=0.3)
    j.append("launched", enclave_id="i-1-enc99", name="db")
    events = j.read()
    assert [e.event for e in events] == ["launched", "exited", "launched"]
    assert events[0].to_json()["cid"] == 16 and events[0].when.tzinfo is not None
    assert events[0].time.endswith("Z")
    assert [e.event for e in j.read(enclave="web")] == ["launched", "exited"]
    assert [e.event for e in j.read(enclave="1a2b")] == ["launched", "exited"]  # the part after -enc
    assert j.read(enclave="nobody") == []
    assert list(j.open_launches()) == ["i-1-enc99"]
    # every line is one JSON object with the core fields
    for line in (tmp_path / "journal.jsonl").read_text().splitlines():
        obj = json.loads(line)
        assert {"time", "event", "enclave_id", "name", "eif_path", "pcr0"} <= set(obj)


def test_torn_last_line_is_skipped_and_the_next_event_stands_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    warnings: list[str] = []
    j = Journal(path, warn=warnings.append)
    j.append("launched", enclave_id="e1", name="one")
    with open(path, "ab") as fh:
        fh.write(b'{"time": "2026-12-02T10:00:00Z", "event": "exi')  # a crash mid-write
    assert [e.event for e in Journal(path).read()] == ["launched"]
    j.append("terminated", enclave_id="e1", name="one")
    fresh = Journal(path, warn=warnings.append)
    assert [e.event for e in fresh.read()] == ["launched", "terminated"]
    assert any("unreadable line" in w for w in warnings)


def test_rotation_bounds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path, max_bytes=2000, keep=2)
    for i in range(200):
        j.append("built", eif_path=f"/eifs/{i}.eif", pcr0="b" * 96)
    files = sorted(tmp_path.glob("journal.jsonl*"))
    assert {f.name for f in files} <= {"journal.jsonl", "journal.jsonl.1", "journal.jsonl.2", "journal.jsonl.lock"}
    assert all(f.stat().st_size < 2000 + 400 for f in files)
    events = j.read()
    # newest last, none duplicated, the oldest ones rotated away
    numbers = [int(Path(e.eif_path or "").stem) for e in events]
    assert numbers == sorted(numbers) and numbers[-1] == 199 and numbers[0] > 0


def _writer(path: str, n: int, tag: str) -> None:
    j = Journal(Path(path))
    for i in range(n):
        j.append("built", eif_path=f"/{tag}/{i}.eif", padding="x" * 3000)


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), 100, f"w{k}")) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 400 and all(parse_line(line) is not None for line in lines)


def _record_exit(path: str, barrier: object) -> None:
    j = Journal(Path(path))
    barrier.wait()  # type: ignore[attr-defined]
    event = make_event("exited", enclave_id="e1")
    j.record_once(event, lambda events: "e1" in j.open_launches(events))


def test_record_once_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).append("launched", enclave_id="e1")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_record_exit, args=(str(path), barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [e.event for e in Journal(path).read()] == ["launched", "exited"]


def test_since_parsing() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-12-02T10:00:00Z") == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert parse_since("2026-12-02T11:00:00+01:00") == datetime(2026, 12, 2, 10, tzinfo=UTC)
    for bad in ("", "yesterday", "15x", "9" * 70):
        with pytest.raises(UsageError):
            parse_since(bad, now)


def test_follow_streams_new_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append("built", eif_path="/a.eif")
    seen: list[str] = []
    writer = Journal(path)

    def tick() -> None:
        if len(seen) == 1:
            writer.append("launched", enclave_id="e2", name="two")

    for event in j.follow(stop=lambda: len(seen) >= 2, poll=0.1, tick=tick):
        seen.append(event.event)
    assert seen == ["built", "launched"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_parse_line_fuzz(data: bytes) -> None:
    event = parse_line(data)
    if event is not None:
        assert isinstance(event.event, str) and event.event and event.when.tzinfo is not None


def fill(folder: Path) -> None:
    """Write zeros into ``folder``'s file system until it is full (ENOSPC)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_disk_warns_and_loses_nothing_else(tmp_path: Path) -> None:
    require(is_root(), "mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        warnings: list[str] = []
        j = Journal(mount / "journal.jsonl", warn=warnings.append)
        j.append("launched", enclave_id="e1", name="kept")
        fill(mount)
        event = j.append("exited", enclave_id="e1", name="kept", last_console=["x" * 500] * 20)
        assert event.event == "exited"  # returned, not raised
        assert any("No space left" in w or "short write" in w for w in warnings), warnings
        assert [e.event for e in Journal(mount / "journal.jsonl").read()][0] == "launched"
        os.unlink(mount / "filler")
        j.append("terminated", enclave_id="e1")
        assert Journal(mount / "journal.jsonl").read()[-1].event == "terminated"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
