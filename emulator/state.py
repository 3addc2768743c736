"""Who holds what: the emulator's enclave table, shared by every nitro-emu process under an fcntl lock.

Each running enclave has one entry, written by its supervisor while it holds the lock, so concurrent
run-enclave commands never hand out the same CPU, hugepage or CID. Entries whose supervisor is dead
(PID gone, or reused by another process: the start time differs) are reclaimed on every locked access.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import home
from core.errors import InputTooLarge, NitrodeckError

MAX_STATE_BYTES = 1024 * 1024


class StateError(NitrodeckError):
    code = "EMU-STATE"


@dataclass
class Entry:
    enclave_id: str
    name: str
    cid: int
    supervisor_pid: int
    supervisor_start: int
    cpu_ids: list[int]
    memory_mib: int
    pages: dict[int, int]
    debug: bool
    eif_path: str
    slot: str
    enclave_pid: int = 0
    enclave_start: int = 0
    cgroup: str | None = None
    started: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["pages"] = {str(k): v for k, v in self.pages.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        data = dict(data)
        data["pages"] = {int(k): int(v) for k, v in data.get("pages", {}).items()}
        return cls(**data)


def run_dir() -> Path:
    return home.ensure(home.emulator_run_dir())


def state_file() -> Path:
    return run_dir() / "enclaves.json"


def slot_dir(slot: str) -> Path:
    """Per-enclave runtime folder: control/boot/NSM sockets and the extracted rootfs."""
    return run_dir() / slot


def proc_start_time(pid: int) -> int:
    """Kernel start time of ``pid`` (clock ticks since boot), 0 when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return 0
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return 0
    return int(fields[19])


def pid_alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and proc_start_time(pid) == start


def entry_alive(entry: Entry) -> bool:
    return pid_alive(entry.supervisor_pid, entry.supervisor_start)


def _parse(raw: bytes, where: str) -> list[Entry]:
    if len(raw) > MAX_STATE_BYTES:
        raise InputTooLarge(f"larger than {MAX_STATE_BYTES} bytes", where=where)
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
        return [Entry.from_json(item) for item in data["enclaves"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"corrupt enclave table: {exc}", where=where, hint="remove it when no enclave runs") from None


def read_entries() -> list[Entry]:
    """A consistent snapshot without the lock (the file is replaced atomically)."""
    path = state_file()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return []
    return _parse(raw, str(path))


class Table:
    """The enclave table while the lock is held."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.reclaimed: list[Entry] = []
        self.dirty = False

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.dirty = True

    def remove(self, enclave_id: str) -> Entry | None:
        for e in self.entries:
            if e.enclave_id == enclave_id:
                self.entries.remove(e)
                self.dirty = True
                return e
        return None

    def get(self, enclave_id: str) -> Entry | None:
        return next((e for e in self.entries if e.enclave_id == enclave_id), None)

    def update(self, entry: Entry) -> None:
        self.entries = [entry if e.enclave_id == entry.enclave_id else e for e in self.entries]
        self.dirty = True


@contextlib.contextmanager
def locked(reclaim: bool = True) -> Iterator[Table]:
    """Hold the table lock; dead supervisors' entries are removed and their leftovers cleaned up."""
    lock_path = run_dir() / "enclaves.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        table = Table(read_entries())
        if reclaim:
            for e in list(table.entries):
                if not entry_alive(e):
                    table.remove(e.enclave_id)
                    cleanup_leftovers(e)
                    table.reclaimed.append(e)
        try:
            yield table
        finally:
            # also on errors: reclaimed entries are gone for good, and callers add entries last
            if table.dirty:
                _write(table.entries)
    finally:
        os.close(fd)


def _write(entries: list[Entry]) -> None:
    path = state_file()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".enclaves-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"enclaves": [e.to_json() for e in entries]}, fh)
    os.replace(tmp, path)


def cleanup_leftovers(entry: Entry) -> None:
    """After a supervisor died: stop its enclave process group, drop its cgroup and runtime folder."""
    if pid_alive(entry.enclave_pid, entry.enclave_start):
        with contextlib.suppress(OSError):
            os.killpg(entry.enclave_pid, signal.SIGKILL)
    if entry.cgroup:
        from emulator.isolation import remove_cgroup

        remove_cgroup(entry.cgroup)
    shutil.rmtree(slot_dir(entry.slot), ignore_errors=True)


@contextlib.contextmanager
def home_override(home_dir: Path | None) -> Iterator[None]:
    """Point core.home at ``home_dir`` for the duration (read-only callers such as the status screen)."""
    if home_dir is None:
        yield
        return
    old = os.environ.get(home.ENV_HOME)
    os.environ[home.ENV_HOME] = str(home_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(home.ENV_HOME, None)
        else:
            os.environ[home.ENV_HOME] = old
