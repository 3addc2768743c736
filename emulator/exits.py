"""How ended enclaves ended: one small JSON file per enclave the supervisor saw exit on its own.

nitrodeck's journal (core/ops/journal.py) asks for these through ``Backend.exit_info`` so an
``exited`` event carries the enclave process's real exit status and time, not only the moment some
nitrodeck process noticed. Terminated enclaves get no file (nitrodeck records those itself). Bounded:
the newest ``KEEP`` files are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from core import home
from core.backends.base import ExitInfo

KEEP = 256
_MAX_FILE = 4096


def exits_dir() -> Path:
    return home.emulator_run_dir() / "exits"


def _path(enclave_id: str) -> Path | None:
    if not enclave_id or "/" in enclave_id or enclave_id.startswith(".") or len(enclave_id) > 256:
        return None
    return exits_dir() / f"{enclave_id}.json"


def record_exit(enclave_id: str, status: int | None, started_at: float | None) -> None:
    """Write the exit record; never fails the supervisor (it is tearing down)."""
    path = _path(enclave_id)
    if path is None:
        return
    body = {"ended_at": time.time(), "status": status, "started_at": started_at}
    with contextlib.suppress(OSError):
        home.ensure(path.parent)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, path)
        _prune(path.parent)


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime if p.exists() else 0)
    for old in files[:-KEEP]:
        with contextlib.suppress(OSError):
            old.unlink()


def read_exit(enclave_id: str) -> ExitInfo | None:
    path = _path(enclave_id)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(_MAX_FILE))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ended_at"), int | float):
        return None
    status = data.get("status")
    started = data.get("started_at")
    return ExitInfo(
        float(data["ended_at"]),
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None,
    )
