"""The lifecycle journal: append/read, torn lines, rotation, concurrent writers, a full disk, --since."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from collections.abc import Callable
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


def _run_writers(target: Callable[[str, int, str], None], path: Path, timeout: float) -> None:
    """Four writer processes (forked, as separate nitrodeck processes would be), 100 events each."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=(str(path), 100, f"w{k}")) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    _run_writers(_writer, path, 60)
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
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)  # compound, as systemd/journalctl read them
    assert parse_since("2w", now) == parse_since("14d", now) == parse_since("1W7D", now)
    for bad in ("", "yesterday", "15x", "9" * 70, "h", "1h30", "-5m", "5 m"):
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


def _exit_of(j: Journal, enclave_id: str) -> bool:
    event = make_event("exited", enclave_id=enclave_id, name=enclave_id.upper())
    return j.record_once(event, lambda events: enclave_id in j.open_launches(events))


def test_read_only_journal_writes_nothing_and_keeps_what_it_observed(tmp_path: Path) -> None:
    """Read-only (issue 9 item 10): an exit or a PCR mismatch the process notices stays in its memory,
    merged into what it reads, until a process that writes records the same fact: then it counts once."""
    path = tmp_path / "journal.jsonl"
    writer = Journal(path)
    writer.append("launched", enclave_id="e1", name="E1")
    writer.append("launched", enclave_id="e2", name="E2")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ro = Journal(path, read_only=True)
    assert _exit_of(ro, "e1") and not _exit_of(ro, "e1")  # once, also in memory
    mismatch = make_event("pcr-mismatch", enclave_id="e2", pin="web")
    assert ro.record_once(mismatch, lambda events: not any(e.event == "pcr-mismatch" for e in events))
    ro.append("pinned", pin="other")  # (refused before it gets here; still nothing written)
    with ro.terminating(["e2"]):
        assert not ro.is_terminating("e2")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # not even journal.jsonl.lock
    assert [(e.event, e.enclave_id) for e in ro.read()] == [
        ("launched", "e1"), ("launched", "e2"), ("exited", "e1"), ("pcr-mismatch", "e2"), ("pinned", None)]
    assert list(ro.open_launches()) == ["e2"] and [e.event for e in ro.read(enclave="e1")] == ["launched", "exited"]
    assert [e.event for e in writer.read()] == ["launched", "launched"]  # another process sees none of it

    # a writer notices the same exit and mismatch later: the file's copies replace the observed ones
    assert _exit_of(writer, "e1")
    writer.record_once(make_event("pcr-mismatch", enclave_id="e2", pin="web"), lambda events: True)
    exits = [e for e in ro.read() if e.event == "exited"]
    assert len(exits) == 1 and exits[0] == writer.read()[2]
    assert [e.event for e in ro.read()].count("pcr-mismatch") == 1
    # a journal never written: nothing is created
    empty = tmp_path / "none"
    empty.mkdir()
    nothing = Journal(empty / "journal.jsonl", read_only=True)
    nothing.append("launched", enclave_id="e9")
    assert _exit_of(nothing, "e9") and [e.event for e in nothing.read()] == ["launched", "exited"]
    assert list(empty.iterdir()) == []


def test_read_only_follow_delivers_an_observed_exit_once(tmp_path: Path) -> None:
    """A read-only follower (the agent's /events/stream) delivers the exit it observed at once, and not
    again when a process that writes records the same exit."""
    path = tmp_path / "journal.jsonl"
    writer = Journal(path)
    writer.append("launched", enclave_id="e1", name="one")
    ro = Journal(path, read_only=True)
    seen: list[tuple[str, str | None]] = []
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1
        if len(seen) == 1 and ticks[0] == 1:
            assert _exit_of(ro, "e1")  # this process notices the exit: it writes nothing
        elif len(seen) == 2 and ticks[0] == 2:
            assert _exit_of(writer, "e1")  # a writer records it as well
            writer.append("launched", enclave_id="e2", name="two")

    for event in ro.follow(stop=lambda: len(seen) >= 3 or ticks[0] > 50, poll=0.1, tick=tick):
        seen.append((event.event, event.enclave_id))
    assert seen == [("launched", "e1"), ("exited", "e1"), ("launched", "e2")]
    assert [e.event for e in Journal(path).read()] == ["launched", "exited", "launched"]


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


def _rotating_writer(path: str, n: int, tag: str) -> None:
    j = Journal(Path(path), max_bytes=8000, keep=200)
    for i in range(n):
        j.append("built", eif_path=f"/{tag}/{i}.eif", padding="x" * 300)


def test_concurrent_writers_across_rotations_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """Rotation happens under the same lock as the appends: with four writers rotating many times, every
    event is in exactly one file, whole, and each writer's events keep their order."""
    path = tmp_path / "journal.jsonl"
    _run_writers(_rotating_writer, path, 120)
    reader = Journal(path, max_bytes=8000, keep=200)
    assert len(reader.files()) > 10  # it did rotate, many times
    events = reader.read()
    assert len(events) == 400 and len({e.eif_path for e in events}) == 400
    for k in range(4):
        mine = [int(Path(e.eif_path or "").stem) for e in events if (e.eif_path or "").startswith(f"/w{k}/")]
        assert mine == list(range(100))


def test_an_unreadable_journal_is_said_once_not_taken_for_no_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.mkdir()  # anything that is not a readable file
    warnings: list[str] = []
    j = Journal(path, warn=warnings.append)
    assert j.read() == [] and j.read() == []
    assert len([w for w in warnings if "cannot read" in w]) == 1, warnings
    j.append("launched", enclave_id="e1")  # and a write says so too, without raising
    assert any("launched not recorded" in w for w in warnings)
