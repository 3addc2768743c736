"""The emulator's /var/log/nitro_enclaves: ``nitro_enclaves.log`` lines and ``err<time>.log`` files."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core import home
from core.backends.real import ENV_READ_ONLY, env_read_only
from emulator.errors import HELP_URL, EmuError

VERSION = "1.5.0"
_MAX_LOG_BYTES = 8 * 1024 * 1024
#: err logs that could not be written in this process: path -> (text, why); error_block shows them
_UNWRITTEN: dict[Path, tuple[str, str]] = {}
#: the text of the err logs made in this process (the last few), for BACKTRACE=1
_BACKTRACES: dict[Path, str] = {}
#: common/mod.rs BACKTRACE_VAR: "1" puts the backtrace into the printed block too
ENV_BACKTRACE = "BACKTRACE"


def rfc3339_ns() -> str:
    """chrono's ``to_rfc3339()``: nanoseconds and ``+00:00``."""
    ns = time.time_ns()
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}+00:00"


def log_dir() -> Path:
    return home.ensure(home.emulator_log_dir())


#: a command answered inside a read-only nitrodeck (emulator.cli.answer): told so as the process is
#: told by its environment. Per thread and task, so it never leaks to other callers in that process.
TOLD_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("nitro_emu_read_only", default=False)


def read_only() -> bool:
    """nitro-emu was told that nothing may change (``NITRODECK_READ_ONLY``, which nitrodeck's driver sets
    for a read-only caller): it then writes nothing at all, logs included."""
    return TOLD_READ_ONLY.get() or env_read_only()


def log_line(origin: str, level: str, msg: str) -> None:
    """Append ``[origin:pid][LEVEL][time][file:line] msg`` like nitro-cli's logger; never fails the caller.
    Read-only, nothing is appended (the caller's stderr line is all there is)."""
    if read_only():
        return
    caller = sys._getframe(1)
    where = f"emulator/{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    line = f"[{origin}:{os.getpid()}][{level}][{now}][{where}] {msg}\n"
    try:
        path = log_dir() / "nitro_enclaves.log"
        if path.exists() and path.stat().st_size > _MAX_LOG_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError:
        pass


def write_err_log(err: EmuError, action: str) -> Path:
    """Write the backtrace file nitro-cli points support tickets at; returns its path. Read-only, it is
    not written: the error block carries its text instead (as on a full disk)."""
    if read_only():
        folder = home.emulator_log_dir()
    else:
        try:
            folder = log_dir()
        except OSError:  # the folder cannot even be created: the path below is reported as unwritten
            folder = home.emulator_log_dir()
    path = folder / f"err{rfc3339_ns()}.log"
    subs = err.subactions or [f"{err.code}: {err.message.splitlines()[0]}"]
    file, line = _origin(err)
    text = f"  Action: {action}\n  Subactions:"
    for sub in subs:
        text += f"\n    {sub}"
    text += f"\n  Root error file: {file}"
    text += f"\n  Root error line: {line}"
    text += f"\n  Version: {VERSION}"
    if len(_BACKTRACES) >= 16:
        _BACKTRACES.pop(next(iter(_BACKTRACES)))
    _BACKTRACES[path] = text
    if read_only():
        _unwritten(path, text, f"read-only: {ENV_READ_ONLY} is set")
        return path
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        # a full disk (or a read-only log folder): error_block then prints what the file would hold
        with contextlib.suppress(OSError):
            path.unlink()
        _unwritten(path, text, exc.strerror or str(exc))
    return path


def _unwritten(path: Path, text: str, why: str) -> None:
    if len(_UNWRITTEN) >= 16:
        _UNWRITTEN.pop(next(iter(_UNWRITTEN)))
    _UNWRITTEN[path] = (text, why)


def _origin(err: EmuError) -> tuple[str, int]:
    """Where the error was raised (the innermost traceback frame), else our caller's caller."""
    tb = err.__traceback__
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code, line = tb.tb_frame.f_code, tb.tb_lineno
    else:
        frame = sys._getframe(2)
        code, line = frame.f_code, frame.f_lineno
    return "emulator/" + os.path.basename(code.co_filename), line


def error_block(err: EmuError, log_path: Path) -> str:
    """The stderr block, ending in a newline. When the err log could not be written, the block says
    so and carries the log's text itself, instead of pointing at a file that does not exist."""
    head = f"[ {err.code} ] {err.message}\n\nFor more details, please visit {HELP_URL.format(code=err.code)}\n\n"
    if os.environ.get(ENV_BACKTRACE) == "1" and log_path in _BACKTRACES:
        # common/mod.rs construct_error_message: the backtrace between the help link and the log line
        head += f"Backtrace:\n{_BACKTRACES[log_path]}\n\n"
    unwritten = _UNWRITTEN.get(log_path)
    if unwritten is not None:
        text, why = unwritten
        return head + f"The error log could not be written to {log_path.parent} ({why}); it says:\n{text}\n"
    return head + f'If you open a support ticket, please provide the error log found at "{log_path}"\n'
