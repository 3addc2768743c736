"""console/driver.py: the TUI's input thread sleeps while nothing is pending, yet keys (a lone ESC
too, which needs the parser's timeout) arrive, and stopping the driver wakes the thread at once."""

from __future__ import annotations

import os
import pty
import signal
import threading
import time
import tty
from typing import Any

from textual import events

from console.app import NitrodeckApp
from console.driver import IDLE_WAIT_S, QuietLinuxDriver
from console.screens.frozen import FrozenSource


class Recording(QuietLinuxDriver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: list[str] = []

    def process_message(self, message: Any) -> None:
        if isinstance(message, events.Key):
            self.keys.append(message.key)


def _wait(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def test_keys_arrive_and_stopping_wakes_the_sleeping_input_thread() -> None:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTSTP, signal.SIGCONT)}
    master, slave = pty.openpty()
    tty.setraw(slave)  # as Textual puts the terminal: bytes arrive as typed, not by the line
    thread: threading.Thread | None = None
    try:
        driver = Recording(object())  # type: ignore[arg-type]  # the app is only kept, never used here
        driver.fileno = slave
        thread = threading.Thread(target=driver.run_input_thread, daemon=True)
        thread.start()
        os.write(master, b"a")
        assert _wait(lambda: driver.keys == ["a"])
        os.write(master, b"\x1b[A")  # a whole sequence: the up arrow
        assert _wait(lambda: driver.keys == ["a", "up"])
        os.write(master, b"\x1b")  # a lone ESC is a key only after the parser's timeout
        assert _wait(lambda: driver.keys == ["a", "up", "escape"])
        time.sleep(0.3)  # nothing pending now: the thread waits up to IDLE_WAIT_S on its own
        started = time.monotonic()
        driver.exit_event.set()
        thread.join(IDLE_WAIT_S)
        assert not thread.is_alive() and time.monotonic() - started < 1.0
    finally:
        if thread is not None and thread.is_alive():
            driver.exit_event.set()
            thread.join(IDLE_WAIT_S)
        os.close(master)
        os.close(slave)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_the_dashboard_uses_it_where_textual_would_use_its_linux_driver() -> None:
    from textual.drivers.linux_driver import LinuxDriver

    app = NitrodeckApp(FrozenSource(), refresh_seconds=0)
    assert issubclass(app.driver_class, LinuxDriver) and app.driver_class.__name__ == "QuietLinuxDriver"
