"""Append-only JSON-lines audit log of mutating actions (who did what, through which backend, and how it went).

One line per action at ``core.home.audit_log()``. Lines are appended under an exclusive ``flock`` so
concurrent nitrodeck processes (TUI + CLI) never interleave. The file is capped: when it would grow
past ``max_bytes`` it is rotated once to ``audit.log.1`` (the previous rotation is dropped).

Never secrets: argv values that follow secret-bearing flags are masked, and callers pass only argv
and result codes, never payloads.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import home
from core.errors import InputTooLarge, NitrodeckError

MAX_BYTES = 8 * 1024 * 1024
MAX_LINE = 64 * 1024
MAX_READ_LINES = 100_000
#: flags whose value must never reach the log (a key path is not a secret, but a KMS ARN or an inline
#: key could be; masking all of them keeps the rule simple)
SECRET_FLAGS = frozenset({"--private-key", "--password", "--secret", "--token", "--plaintext", "--key-material"})
MASK = "***"


class AuditError(NitrodeckError):
    code = "ND-AUDIT"


@dataclass(frozen=True)
class AuditEntry:
    time: str  # RFC 3339, UTC
    user: str
    action: str
    argv: list[str]
    result: str  # "ok" | "error"
    code: str | None
    backend: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)


def current_user() -> str:
    """The login name of the real uid (from the password database, not $USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact(argv: list[str]) -> list[str]:
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            if eq:
                out.append(f"{flag}={MASK}")
            else:
                out.append(arg)
                mask_next = True
            continue
        out.append(arg)
    return out


class AuditLog:
    def __init__(self, path: Path | None = None, max_bytes: int = MAX_BYTES) -> None:
        self.path = path or home.audit_log()
        self.max_bytes = max_bytes

    def record(
        self,
        action: str,
        argv: list[str],
        *,
        ok: bool,
        code: str | None = None,
        backend: str = "",
    ) -> AuditEntry:
        entry = AuditEntry(
            time=now_rfc3339(),
            user=current_user(),
            action=action,
            argv=redact([str(a) for a in argv]),
            result="ok" if ok else "error",
            code=code,
            backend=backend,
        )
        line = entry.to_json()
        if len(line) > MAX_LINE:
            # Keep the who/what/result even when argv is absurdly long.
            entry = AuditEntry(entry.time, entry.user, entry.action, [*entry.argv[:8], "..."], entry.result,
                               entry.code, entry.backend)
            line = entry.to_json()[:MAX_LINE]
        self._append(line + "\n")
        return entry

    def _append(self, line: str) -> None:
        home.ensure(self.path.parent)
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    size = self.path.stat().st_size if self.path.exists() else 0
                    if size + len(line) > self.max_bytes:
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    try:
                        os.write(fd, line.encode("utf-8"))
                    finally:
                        os.close(fd)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit log: {exc.strerror or exc}", where=str(self.path)) from None

    def entries(self, limit: int = MAX_READ_LINES) -> list[dict[str, Any]]:
        """Parsed lines, oldest first; malformed lines are skipped (a crash mid-write leaves half a line)."""
        if not self.path.exists():
            return []
        if self.path.stat().st_size > self.max_bytes + MAX_LINE:
            raise InputTooLarge(f"audit log larger than {self.max_bytes} bytes", where=str(self.path))
        out: list[dict[str, Any]] = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                if len(out) >= limit:
                    break
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
        return out
