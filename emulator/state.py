"""Who holds what: the emulator's enclave table, shared by every nitro-emu process under an fcntl lock.

Each running enclave has one entry, written by its supervisor while it holds the lock, so concurrent
run-enclave commands never hand out the same CPU, hugepage or CID. Entries whose supervisor is dead
(PID gone, or reused by another process: the start time differs) are reclaimed on every locked access.

The table file (``enclaves.json``) is a cache, not the truth: every supervisor also keeps its own
entry in its runtime folder (``<run>/<slot>/entry.json``), written under the same lock. Every read
rebuilds the table from the records of the supervisors that are actually alive, so an edited,
truncated or corrupt table can neither hide a running enclave (whose CPUs, CID and sockets the next
launch would then reuse) nor invent one; what was repaired is reported (``Table.problems``).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import home
from core.channel import vsock_peers
from core.errors import InputTooLarge, NitrodeckError

MAX_STATE_BYTES = 1024 * 1024


class StateError(NitrodeckError):
    code = "EMU-STATE"


class LockWaitAbandoned(Exception):  # noqa: N818 - what happened, not a failure of the table
    """The table lock was not taken: a command answered inside another process (emulator.cli.answer)
    reached that process's deadline (``cancelled`` False) or was cancelled by it (True)."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else "the enclave table stayed locked past the deadline")
        self.cancelled = cancelled


#: for a command answered inside another process: (deadline on time.monotonic(), cancelled?). That
#: process cannot kill us on its timeout as it kills a nitro-emu process, so :func:`locked` waits for the
#: lock only until then. None (a nitro-emu process, a supervisor): wait as long as it takes.
LOCK_WAIT: contextvars.ContextVar[tuple[float, Callable[[], bool] | None] | None] = contextvars.ContextVar(
    "nitro_emu_lock_wait", default=None
)
#: how often a bounded wait tries the lock again
_LOCK_POLL = 0.01


def _take_lock(fd: int, kind: int = fcntl.LOCK_EX) -> None:
    wait = LOCK_WAIT.get()
    if wait is None:
        fcntl.flock(fd, kind)
        return
    deadline, cancelled = wait
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if cancelled is not None and cancelled():
            raise LockWaitAbandoned(True)
        if time.monotonic() >= deadline:
            raise LockWaitAbandoned(False)
        time.sleep(_LOCK_POLL)


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
    """The runtime folder; not created here (readers must not make it: writers lock, and locking makes it)."""
    return home.emulator_run_dir()


def state_file() -> Path:
    return run_dir() / "enclaves.json"


def slot_dir(slot: str) -> Path:
    """Per-enclave runtime folder: control/boot/NSM sockets and the extracted rootfs."""
    return run_dir() / slot


# one reader of /proc/<pid>/stat for the emulator and the vsock peer registry
proc_start_time = vsock_peers.proc_start_time


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter run state of ``pid`` (R, S, T for stopped ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode("ascii", "replace") if fields else None


def pid_alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and proc_start_time(pid) == start


def entry_alive(entry: Entry) -> bool:
    return pid_alive(entry.supervisor_pid, entry.supervisor_start)


RECORD = "entry.json"
MAX_RECORD_BYTES = 64 * 1024


def _parse(raw: bytes, where: str) -> list[Entry]:
    if len(raw) > MAX_STATE_BYTES:
        raise InputTooLarge(f"larger than {MAX_STATE_BYTES} bytes", where=where)
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
        return [Entry.from_json(item) for item in data["enclaves"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(
            f"corrupt enclave table: {exc}", where=where, hint="remove it when no enclave runs"
        ) from None


def _read_table() -> tuple[list[Entry], str | None]:
    """The table file's entries, and why it could not be read (None when it could)."""
    path = state_file()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], exc.strerror or str(exc)
    try:
        return _parse(raw, str(path)), None
    except NitrodeckError as exc:
        return [], exc.message


def write_record(entry: Entry) -> None:
    """The supervisor's own copy of its entry (call with the lock held, with every table change)."""
    folder = home.ensure(slot_dir(entry.slot))
    import tempfile  # (here and below) writers only: a describe that changes nothing skips the imports

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".entry-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(entry.to_json(), fh)
    os.replace(tmp, folder / RECORD)


def _read_record(folder: Path) -> Entry | None:
    try:
        with open(folder / RECORD, "rb") as fh:
            entry = Entry.from_json(json.loads(fh.read(MAX_RECORD_BYTES)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return entry if entry.slot == folder.name else None


def read_record(slot: str) -> Entry | None:
    """The supervisor's own record of slot ``slot`` (None when missing or unreadable)."""
    return _read_record(slot_dir(slot))


def supervisor_records() -> list[Entry]:
    """Every supervisor's record in the runtime folder (alive or not), oldest launch first."""
    try:
        folders = [Path(d.path) for d in os.scandir(run_dir()) if d.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    records = [r for r in (_read_record(f) for f in folders) if r is not None]
    return sorted(records, key=lambda e: (len(e.slot), e.slot))


@dataclass
class Reconciled:
    entries: list[Entry]  # live supervisors' entries
    dead: list[Entry]  # records of supervisors that are gone (to reclaim)
    problems: list[str]  # what the table file got wrong


def reconcile(table: list[Entry], unreadable: str | None) -> Reconciled:
    """The table as the live supervisors' own records say it is; the file's differences reported."""
    records = supervisor_records()
    in_table = {e.enclave_id: e for e in table}
    known = {r.enclave_id for r in records}
    out = Reconciled([], [], [])
    if unreadable is not None:
        out.problems.append(
            f"the enclave table was unreadable ({unreadable}); rebuilt from the running supervisors"
        )
    for rec in records:
        if not entry_alive(rec):
            out.dead.append(rec)
            continue
        out.entries.append(rec)
        listed = in_table.get(rec.enclave_id)
        if unreadable is not None:
            continue
        if listed is None:
            out.problems.append(
                f"enclave {rec.enclave_id} (enclave process {rec.supervisor_pid}) was missing from the "
                "enclave table; restored from its enclave process"
            )
        elif listed.to_json() != rec.to_json():
            out.problems.append(
                f"the table entry of enclave {rec.enclave_id} did not match its enclave process; restored"
            )
    for e in table:
        if e.enclave_id not in known and entry_alive(e):
            # not written by a supervisor: never trusted, never acted on (no kill, no cleanup)
            out.problems.append(
                f"the table entry {e.enclave_id[:80]!r} belongs to no enclave process; dropped"
            )
    return out


def read_entries() -> list[Entry]:
    """The live enclaves without taking the lock (records and table file are replaced atomically)."""
    table, unreadable = _read_table()
    return reconcile(table, unreadable).entries


@contextlib.contextmanager
def read_locked() -> Iterator[Reconciled]:
    """The table as :func:`locked` would find it, for a reader that may write nothing (read-only).

    It waits for a change in progress (a launch writes its record, then the table) by taking a shared
    lock on the existing lock file, opened read-only; with no lock file, nothing ever changed the table
    and there is nothing to wait for. Dead supervisors' records are reported, never reclaimed."""
    try:
        fd: int | None = os.open(run_dir() / "enclaves.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # none (or not ours to open): read without waiting; the files are replaced atomically
        fd = None
    try:
        if fd is not None:
            _take_lock(fd, fcntl.LOCK_SH)
        listed, unreadable = _read_table()
        yield reconcile(listed, unreadable)
    finally:
        if fd is not None:
            os.close(fd)


class Table:
    """The enclave table while the lock is held."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.reclaimed: list[Entry] = []
        self.problems: list[str] = []
        self.dirty = False

    def add(self, entry: Entry) -> None:
        write_record(entry)
        self.entries.append(entry)
        self.dirty = True

    def remove(self, enclave_id: str) -> Entry | None:
        for e in self.entries:
            if e.enclave_id == enclave_id:
                self.entries.remove(e)
                with contextlib.suppress(OSError):
                    (slot_dir(e.slot) / RECORD).unlink()
                self.dirty = True
                return e
        return None

    def get(self, enclave_id: str) -> Entry | None:
        return next((e for e in self.entries if e.enclave_id == enclave_id), None)

    def update(self, entry: Entry) -> None:
        write_record(entry)
        self.entries = [entry if e.enclave_id == entry.enclave_id else e for e in self.entries]
        self.dirty = True


@contextlib.contextmanager
def locked(reclaim: bool = True) -> Iterator[Table]:
    """Hold the table lock; dead supervisors' entries are removed and their leftovers cleaned up."""
    lock_path = home.ensure(run_dir()) / "enclaves.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _take_lock(fd)
        listed, unreadable = _read_table()
        found = reconcile(listed, unreadable)
        table = Table(found.entries)
        table.problems = found.problems
        # the file is rewritten whenever it says anything but what the supervisors say
        table.dirty = unreadable is not None or [e.to_json() for e in listed] != [
            e.to_json() for e in found.entries
        ]
        if reclaim:
            for e in found.dead:
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
    import tempfile

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
    import shutil

    shutil.rmtree(slot_dir(entry.slot), ignore_errors=True)
    # the CID was this entry's alone: its vsock folder (registry record, stale socket files) goes too
    vsock_peers.unregister(home.emulator_vsock_dir(), entry.cid)


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
