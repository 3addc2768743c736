"""The payload's one log: a timestamped line per event on stdout (the enclave console).

Writing a log line must never fail a request (issue 9 item 8): when the console cannot take a line
(the emulator's console file on a full disk closed the pipe, a real console gone, EPIPE, EIO), the
line is dropped and counted, and the first line that gets through again says how many were lost.
Lines are written with os.write straight to the descriptor, so a failed write leaves nothing in a
buffer that would make every later write fail too.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable


class ConsoleLog:
    def __init__(self) -> None:
        self.dropped = 0
        self.last_error: str | None = None
        self._unreported = 0
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} nitrodeck-enclave: {message}\n"
        with self._lock:
            if self._unreported:
                note = f"{stamp} nitrodeck-enclave: {self._unreported} log line(s) dropped ({self.last_error})\n"
                if self._emit(note):
                    self._unreported = 0
            if self._unreported or not self._emit(line):
                self.dropped += 1
                self._unreported += 1

    def _emit(self, text: str) -> bool:
        stream = sys.stdout
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1  # a stream without a descriptor (tests' capture): its own write
        try:
            if fd < 0:
                stream.write(text)
                stream.flush()
                return True
            data = memoryview(text.encode("utf-8", "replace"))
            while data:
                try:
                    n = os.write(fd, data)
                except InterruptedError:
                    continue
                data = data[n:]
            return True
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self.last_error = getattr(exc, "strerror", None) or type(exc).__name__
            return False


def never_raises(logger: Callable[[str], None]) -> Callable[[str], None]:
    """``logger`` wrapped so that a failing log call is swallowed: requests never fail on a log line."""
    if isinstance(logger, ConsoleLog) or getattr(logger, "_never_raises", False):
        return logger

    def safe(message: str) -> None:
        try:
            logger(message)
        except Exception:  # noqa: BLE001, S110 - a log line is worth less than the request it describes
            pass

    safe._never_raises = True  # type: ignore[attr-defined]
    return safe


#: the process's console log (enclave_app.server.log)
log = ConsoleLog()
