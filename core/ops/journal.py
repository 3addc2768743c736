"""The lifecycle journal: what happened to enclaves, told the same way to every front end.

One JSON object per line in ``core.home.journal_file()``, appended, never rewritten:
``{"time": RFC 3339 UTC, "event": ..., "enclave_id": ..., "name": ..., "eif_path": ..., "pcr0": ..., ...}``.
Events: ``built``, ``launched``, ``launch-failed``, ``exited`` (gone without a terminate from
nitrodeck; ``uptime_s`` and, for debug-mode enclaves, ``last_console``), ``terminated``, ``pinned``,
``unpinned``, ``pcr-mismatch``, ``restarted`` (``nitrodeck up``'s supervisor).

Why it is safe to share:
- every append and every "record once" decision happens under an ``flock`` on ``journal.lock``, so
  two nitrodeck processes that both see an enclave gone write one ``exited``, not two;
- a crash mid-write leaves a torn last line: readers skip any line that is not a whole event, and the
  next writer first ends the torn line so its own event starts on a fresh one;
- the file is rotated when it passes ``max_bytes`` (``journal.jsonl.1`` ... ``.KEEP``), so the journal
  is bounded; readers read the rotated files first (oldest first, newest last);
- a journal that cannot be written (a full disk, a read-only home) warns and never fails the action
  it records: the launch happened whether or not the journal heard of it.

Read-only (``--read-only``, ``NITRODECK_READ_ONLY``: ``Journal(read_only=True)``) writes nothing, not even
the lock file. What such a process observes (an ``exited`` enclave, a ``pcr-mismatch``) is kept in its
memory and merged into what :meth:`Journal.read` and :meth:`Journal.follow` answer, until a process
that writes records the same event (by :func:`dedup_key`): then the file's copy is the one shown, so an
exit is counted once whoever recorded it.

Readers (the CLI's ``events``, the TUI, a later HTTP agent) use :meth:`Journal.read` and
:meth:`Journal.follow`; following polls the file, behind :func:`wait_for_change` so a watcher
(inotify) can replace the poll in one place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core import home
from core.errors import UsageError
from core.models import EnclaveInfo, Measurements

#: one file's size before it is rotated; the journal holds at most (KEEP + 1) of them
MAX_BYTES = 4 * 1024 * 1024
KEEP = 2
#: a line longer than this is not an event (last_console is capped well below it)
MAX_LINE = 64 * 1024
LAST_CONSOLE_LINES = 20
_MAX_CONSOLE_LINE = 512
_CONSOLE_TAIL_BYTES = 64 * 1024
#: events a read-only process keeps in memory at most (the oldest go first)
MAX_OBSERVED = 4096

EVENTS = (
    "built",
    "launched",
    "launch-failed",
    "exited",
    "terminated",
    "pinned",
    "unpinned",
    "pcr-mismatch",
    "restarted",
)
#: after these, an enclave is no longer running (as far as the journal knows)
TERMINAL = frozenset({"exited", "terminated"})
_CORE_FIELDS = ("time", "event", "enclave_id", "name", "eif_path", "pcr0")
#: ``--since``: a duration, one or more amounts with a unit each (``90s``, ``1h30m``, ``2w``)
_DURATION = re.compile(r"^(?:\d{1,9}[wdhms])+$")
_DURATION_PART = re.compile(r"(\d{1,9})([wdhms])")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _log_warning(text: str) -> None:
    import logging  # ~5 ms at import: only a journal with something to say and no listener pays

    logging.getLogger("nitrodeck.journal").warning(text)


def now_rfc3339() -> str:
    return format_time(datetime.now(UTC))


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds (a 0.3 s life needs them) and a ``Z``."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset); naive times are taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``7d``, ``1h30m``) or an RFC 3339 time."""
    raw = text.strip()
    if not raw or len(raw) > 64:
        raise UsageError("give a duration like 15m or an RFC 3339 time", where="--since",
                         hint="use e.g. 30s, 15m, 1h30m, 2h, 7d or 2026-12-02T14:00:00Z")
    if _DURATION.match(raw.lower()):
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(raw.lower()))
        if seconds > 100 * 365 * 86400:
            raise UsageError(f"{raw} is further back than nitrodeck goes", where="--since")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        return parse_time(raw)
    except ValueError:
        raise UsageError(
            f"{raw[:40]!r} is neither a duration nor a time",
            where="--since",
            hint="use e.g. 30s, 15m, 1h30m, 2h, 7d or 2026-12-02T14:00:00Z",
        ) from None


@dataclass(frozen=True)
class Event:
    time: str
    event: str
    enclave_id: str | None = None
    name: str | None = None
    eif_path: str | None = None
    pcr0: str | None = None
    #: what the event adds: uptime_s, last_console, cid, code, message, pin, restarts ...
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> datetime:
        return parse_time(self.time)

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": self.time,
            "event": self.event,
            "enclave_id": self.enclave_id,
            "name": self.name,
            "eif_path": self.eif_path,
            "pcr0": self.pcr0,
        }
        for key, value in self.extra.items():
            if key not in out:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Event | None:
        """None for anything that is not a whole event (a torn line, a foreign object)."""
        if not isinstance(obj, dict):
            return None
        when, kind = obj.get("time"), obj.get("event")
        if not isinstance(when, str) or not isinstance(kind, str) or not kind:
            return None
        try:
            parse_time(when)
        except ValueError:
            return None
        core: dict[str, str | None] = {}
        for key in ("enclave_id", "name", "eif_path", "pcr0"):
            value = obj.get(key)
            core[key] = value if isinstance(value, str) else None
        extra = {k: v for k, v in obj.items() if k not in _CORE_FIELDS}
        return cls(when, kind, core["enclave_id"], core["name"], core["eif_path"], core["pcr0"], extra)

    def matches(self, enclave: str | None) -> bool:
        """``--enclave``: an exact ID or name, or a unique-looking start of the part after ``-enc``."""
        if not enclave:
            return True
        if enclave in (self.enclave_id, self.name):
            return True
        tail = (self.enclave_id or "").partition("-enc")[2]
        wanted = enclave.removeprefix("enc")
        return len(wanted) >= 4 and bool(tail) and tail.startswith(wanted)


def dedup_key(event: Event) -> tuple[str, ...] | None:
    """What makes two events the same fact for the journal's record-once rule, or None.

    An enclave is closed once (``exited`` or ``terminated``); a PCR mismatch is recorded once per
    enclave and pin. A read-only process's observed event gives way to a recorded one with its key."""
    if not event.enclave_id:
        return None
    if event.event in TERMINAL:
        return ("closed", event.enclave_id)
    if event.event == "pcr-mismatch":
        pin = event.get("pin")
        return ("pcr-mismatch", event.enclave_id, pin if isinstance(pin, str) else "")
    return None


def _merge(recorded: list[Event], observed: list[Event]) -> list[Event]:
    """``recorded`` (file order) with each ``observed`` event placed by its time (after equal times)."""
    if not observed:
        return recorded
    out = list(recorded)
    for event in observed:
        out.insert(bisect_right(out, event.when, key=lambda e: e.when), event)
    return out


def ended_when(event: Event) -> datetime:
    """When an ``exited`` enclave ended, as well as it is known: the backend's ``ended_at`` (the emulator's
    supervisor saw the exit), else when the exit was recorded. An exit nobody watched may be recorded
    hours later: "exited 2 s ago" must not be said of it when the backend knows better."""
    ended = event.get("ended_at")
    if isinstance(ended, str):
        with contextlib.suppress(ValueError):
            return parse_time(ended)
    return event.when


def parse_line(line: bytes) -> Event | None:
    if not line.strip() or len(line) > MAX_LINE:
        return None
    try:
        return Event.from_json(json.loads(line))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None


def wait_for_change(path: Path, last: tuple[int, int] | None, timeout: float, stop: Callable[[], bool]) -> None:
    """Return when ``path`` (inode, size) differs from ``last``, ``stop()`` says so, or ``timeout`` passes.

    A bounded poll: the one place to swap in an inotify watcher.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop():
        if _identity(path) != last:
            return
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0.0)))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


@dataclass
class _FileCache:
    inode: int = -1
    offset: int = 0
    events: list[Event] = field(default_factory=list)


class Journal:
    """The journal under ``$NITRODECK_HOME`` (or ``path``). Cheap to construct; safe across processes."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_bytes: int = MAX_BYTES,
        keep: int = KEEP,
        warn: Callable[[str], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = path or home.journal_file()
        #: write nothing (not even the lock file); keep what this process observes in memory instead
        self.read_only = read_only
        self.max_bytes = max_bytes
        self.keep = keep
        self.warn = warn or _log_warning
        #: what went wrong with the journal lately (shown by status and the TUI)
        self.warnings: list[str] = []
        self._cache: dict[Path, _FileCache] = {}
        self._torn_warned: set[tuple[int, int]] = set()
        self._unreadable_warned: set[tuple[Path, int | None]] = set()
        #: read-only: (sequence number, event) this process observed and did not write, oldest first
        self._observed: list[tuple[int, Event]] = []
        self._observed_seq = 0
        # one process may read from several threads (the agent's refresh and its event streams): the
        # file caches and the observed events change under this lock
        self._mutex = threading.RLock()

    # -- writing

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _warn(self, text: str) -> None:
        self.warnings = (self.warnings + [text])[-8:]
        with contextlib.suppress(Exception):
            self.warn(text)

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the journal's lock; yields False (and warns) when it cannot be taken (no home, no disk)."""
        try:
            home.ensure(self.path.parent)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._warn(f"journal not written: cannot open {self.lock_path}: {exc.strerror or exc}")
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def _rotate(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self.max_bytes:
            return
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if index == self.keep:
                with contextlib.suppress(FileNotFoundError):
                    older.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)

    def _write_locked(self, event: Event) -> bool:
        """Append one event; the caller holds the lock. False (and a warning) when it could not be written."""
        line = (json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if len(line) > MAX_LINE:
            self._warn(f"journal: {event.event} event of {len(line)} bytes not written (limit {MAX_LINE})")
            return False
        try:
            self._rotate()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._warn(f"journal: {event.event} not recorded: {exc.strerror or exc} ({self.path})")
            return False
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a torn line (a crash mid-write) so this event stands alone
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        except OSError as exc:
            self._warn(f"journal: {event.event} not recorded: {exc.strerror or exc} ({self.path})")
            return False
        finally:
            os.close(fd)
        return True

    def append(self, kind: str, **fields: Any) -> Event:
        """Record an event now. Never raises for I/O: a failure is a warning (see ``warnings``)."""
        event = make_event(kind, **fields)
        if self.read_only:
            self._observe(event)
            return event
        with self.locked() as ok:
            if ok:
                self._write_locked(event)
        return event

    def record_once(self, event: Event, still_needed: Callable[[list[Event]], bool]) -> bool:
        """Append ``event`` unless ``still_needed(events)`` (asked under the lock) says another process did.

        Read-only, the event is kept in this process's memory instead (the same question, asked of the
        file's events and what this process already observed)."""
        if self.read_only:
            with self._mutex:
                if not still_needed(self.read()):
                    return False
                self._observe(event)
                return True
        with self.locked() as ok:
            if not ok:
                return False
            if not still_needed(self.read()):
                return False
            return self._write_locked(event)

    def _observe(self, event: Event) -> None:
        with self._mutex:
            self._observed_seq += 1
            self._observed = [*self._observed, (self._observed_seq, event)][-MAX_OBSERVED:]

    # -- reading

    def files(self) -> list[Path]:
        """Oldest first: journal.jsonl.KEEP ... journal.jsonl.1, journal.jsonl."""
        rotated = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.keep, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def _load(self, path: Path) -> list[Event]:
        """Parse new whole lines since the last call; a torn last line waits for its end (or is skipped)."""
        cache = self._cache.setdefault(path, _FileCache())
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != cache.inode or st.st_size < cache.offset:
                    cache.inode, cache.offset, cache.events = st.st_ino, 0, []
                fh.seek(cache.offset)
                # bounded: a file never legitimately grows far past max_bytes before rotation
                data = fh.read(max(self.max_bytes, MAX_LINE) * 2)
        except OSError as exc:
            self._cache.pop(path, None)
            if not isinstance(exc, FileNotFoundError) and (path, exc.errno) not in self._unreadable_warned:
                # a journal that cannot be read is said (once), never taken for "nothing happened" in silence
                self._unreadable_warned.add((path, exc.errno))
                self._warn(f"journal: cannot read {path}: {exc.strerror or exc}")
            return []
        end = data.rfind(b"\n") + 1
        bad = 0
        for raw in data[:end].split(b"\n"):
            if not raw.strip():
                continue
            event = parse_line(raw)
            if event is None:
                bad += 1
                continue
            cache.events.append(event)
        cache.offset += end
        if bad:
            key = (cache.inode, cache.offset)
            if key not in self._torn_warned:
                self._torn_warned.add(key)
                self._warn(f"journal: skipped {bad} unreadable line{'s' if bad > 1 else ''} in {path} (torn write?)")
        return cache.events

    def _recorded(self) -> list[Event]:
        """The events in the files, oldest first (the caller holds ``_mutex``)."""
        live = set(self.files())
        for stale in [p for p in self._cache if p not in live]:
            del self._cache[stale]
        out: list[Event] = []
        for path in self.files():
            out.extend(self._load(path))
        return out

    def _unrecorded(self, recorded: list[Event]) -> list[tuple[int, Event]]:
        """This process's observed events that no file holds yet; those a writer has recorded since are
        dropped for good (the caller holds ``_mutex``)."""
        if not self._observed:
            return []
        keys = {key for key in map(dedup_key, recorded) if key is not None}
        self._observed = [(seq, e) for seq, e in self._observed if (key := dedup_key(e)) is None or key not in keys]
        return list(self._observed)

    def _current(self) -> tuple[list[Event], list[tuple[int, Event]], int]:
        """The recorded events, the observed ones not recorded yet, and the last observation's number."""
        with self._mutex:
            recorded = self._recorded()
            return recorded, self._unrecorded(recorded), self._observed_seq

    def read(self, since: datetime | None = None, enclave: str | None = None) -> list[Event]:
        """Every event, oldest first (newest last), optionally from ``since`` on and for one enclave.

        Read-only, the events this process observed and did not write are merged in by time."""
        recorded, observed, _ = self._current()
        out = _merge(recorded, [e for _, e in observed])
        if since is not None:
            out = [e for e in out if e.when >= since]
        if enclave:
            out = [e for e in out if e.matches(enclave)]
        return out

    def follow(
        self,
        since: datetime | None = None,
        enclave: str | None = None,
        stop: Callable[[], bool] = lambda: False,
        poll: float = 1.0,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[Event]:
        """The matching events so far, then each new one as it is appended, until ``stop()``.

        ``tick`` runs after every wait (the CLI uses it to notice exits while it watches). Read-only,
        the events this process observes are delivered too, once: a writer's later copy of one is not."""
        recorded, observed, seq = self._current()
        #: the keys of observed events delivered, so that the file's copy of one is not delivered again
        delivered = {key for _, e in observed if (key := dedup_key(e)) is not None}
        for event in _merge(recorded, [e for _, e in observed]):
            if (since is None or event.when >= since) and event.matches(enclave):
                yield event
        last = recorded[-1] if recorded else None
        while not stop():
            wait_for_change(self.path, _identity(self.path), poll, functools.partial(self._woken, stop, seq))
            if tick is not None:
                tick()
            recorded, observed, newest = self._current()
            fresh = [e for e in _after(recorded, last) if dedup_key(e) not in delivered]
            fresh_observed = [e for n, e in observed if n > seq]
            delivered.update(key for e in fresh_observed if (key := dedup_key(e)) is not None)
            seq = newest
            if recorded:
                last = recorded[-1]
            for event in _merge(fresh, fresh_observed):
                if (since is None or event.when >= since) and event.matches(enclave):
                    yield event

    def _woken(self, stop: Callable[[], bool], seq: int) -> bool:
        """A follower stops waiting for the file when asked to, or when this process observed an event."""
        return stop() or self._observed_seq != seq

    # -- terminations in flight: another process must not take them for exits

    @property
    def _pending_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".terminating")

    @contextlib.contextmanager
    def terminating(self, enclave_ids: list[str]) -> Iterator[None]:
        """Mark enclaves as being terminated by this process while the terminate runs."""
        if self.read_only:  # a read-only process terminates nothing (and writes no mark)
            yield
            return
        marks = []
        for enclave_id in enclave_ids:
            if not enclave_id or "/" in enclave_id or enclave_id.startswith("."):
                continue
            mark = self._pending_dir / enclave_id
            with contextlib.suppress(OSError):
                home.ensure(self._pending_dir)
                mark.touch()
                marks.append(mark)
        try:
            yield
        finally:
            for mark in marks:
                with contextlib.suppress(OSError):
                    mark.unlink()

    def is_terminating(self, enclave_id: str, within: float = 120.0) -> bool:
        try:
            age = time.time() - (self._pending_dir / enclave_id).stat().st_mtime
        except (OSError, ValueError):
            return False
        return age < within

    # -- what the journal knows about enclaves

    def open_launches(self, events: list[Event] | None = None) -> dict[str, Event]:
        """Enclaves nitrodeck launched that no ``exited``/``terminated`` event has closed yet."""
        out: dict[str, Event] = {}
        for event in self.read() if events is None else events:
            if not event.enclave_id:
                continue
            if event.event in ("launched", "restarted"):
                if event.event == "launched" or event.enclave_id not in out:
                    out[event.enclave_id] = event
            elif event.event in TERMINAL:
                out.pop(event.enclave_id, None)
        return out

    def launch_of(self, enclave_id: str, events: list[Event] | None = None) -> Event | None:
        for event in reversed(self.read() if events is None else events):
            if event.enclave_id == enclave_id and event.event == "launched":
                return event
        return None

    def recorded(self, kind: str, enclave_id: str, events: list[Event] | None = None) -> bool:
        return any(e.event == kind and e.enclave_id == enclave_id for e in (self.read() if events is None else events))


def _after(events: list[Event], last: Event | None) -> list[Event]:
    """The events after ``last`` (found from the end: rotation may have dropped older ones)."""
    if last is None:
        return events
    for index in range(len(events) - 1, -1, -1):
        if events[index] == last:
            return events[index + 1 :]
    return [e for e in events if e.time > last.time]


def make_event(kind: str, **fields: Any) -> Event:
    core = {key: fields.pop(key, None) for key in ("enclave_id", "name", "eif_path", "pcr0")}
    when = fields.pop("time", None) or now_rfc3339()
    extra = {k: v for k, v in fields.items() if v is not None}
    return Event(when, kind, core["enclave_id"], core["name"], core["eif_path"], core["pcr0"], extra)


def enclave_from_event(event: Event) -> EnclaveInfo | None:
    """An EnclaveInfo rebuilt from a launched/exited event, for showing an enclave that is gone."""
    if not event.enclave_id:
        return None
    pcrs = event.get("pcrs")
    measurements = None
    if isinstance(pcrs, dict) and all(isinstance(pcrs.get(k), str) for k in ("0", "1", "2")):
        pcr8 = pcrs.get("8")
        measurements = Measurements(pcrs["0"], pcrs["1"], pcrs["2"], pcr8 if isinstance(pcr8, str) else None)

    def number(key: str) -> int:
        value = event.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cpu_ids = event.get("cpu_ids")
    cpus = [c for c in cpu_ids if isinstance(c, int)] if isinstance(cpu_ids, list) else []
    image = event.get("image")
    return EnclaveInfo(
        enclave_id=event.enclave_id,
        process_id=0,
        cid=number("cid"),
        cpu_count=len(cpus),
        cpu_ids=cpus,
        memory_mib=number("memory_mib"),
        state="EXITED",
        flags="DEBUG_MODE" if event.get("debug") else "NONE",
        name=event.name,
        measurements=measurements,
        image_name=image if isinstance(image, str) else None,
        eif_path=event.eif_path,
    )


def console_tail(path: Path | None, lines: int = LAST_CONSOLE_LINES) -> list[str] | None:
    """The last ``lines`` lines of a console file (each cut to a sane length), None without one."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - _CONSOLE_TAIL_BYTES))
            data = fh.read(_CONSOLE_TAIL_BYTES)
    except OSError:
        return None
    text = data.decode("utf-8", "replace").splitlines()
    if len(data) == _CONSOLE_TAIL_BYTES and text:
        text = text[1:]  # the first line is probably cut
    return [line[:_MAX_CONSOLE_LINE] for line in text[-lines:]]
