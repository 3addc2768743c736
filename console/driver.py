"""The terminal driver of the TUI: Textual's Linux driver, with an input thread that sleeps.

Textual's input thread wakes ten times a second to ask its escape-sequence parser whether a lone ESC
has waited long enough to be a key of its own: on an idle dashboard those wake-ups were a third of
its CPU. Here the thread waits without a timeout while the parser holds nothing back (input, or the
driver stopping, wakes it), and keeps Textual's 0.1 s only while an escape sequence is pending.
"""

from __future__ import annotations

import contextlib
import os
import selectors
from codecs import getincrementaldecoder
from threading import Event
from typing import Any

from textual._loop import loop_last
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

#: how long the parser may hold a lone ESC before it is a key (Textual's own interval)
ESCAPE_TICK_S = 0.1
#: the longest the input thread sleeps even with nothing pending (a safety net: it is woken on exit)
IDLE_WAIT_S = 5.0


class _WakingEvent(Event):
    """The driver's exit event: setting it also wakes the input thread's select()."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__()
        self._wake_fd = wake_fd

    def set(self) -> None:
        super().set()
        with contextlib.suppress(OSError):
            os.write(self._wake_fd, b"x")


class QuietLinuxDriver(LinuxDriver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.exit_event = _WakingEvent(self._wake_w)

    def run_input_thread(self) -> None:
        """Textual's loop (textual/drivers/linux_driver.py), waiting on the terminal and the wake pipe."""
        selector = selectors.SelectSelector()
        fileno = self.fileno
        selector.register(fileno, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        parser = XTermParser(self._debug)
        feed = parser.feed
        tick = parser.tick
        decode = getincrementaldecoder("utf-8")().decode

        def process(events: list[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            ours = [(key, mask) for key, mask in events if key.fd == fileno]
            if len(ours) != len(events):
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            for last, (_key, mask) in loop_last(ours):
                if mask & selectors.EVENT_READ:
                    data = decode(os.read(fileno, 1024 * 4), final=final and last)
                    if not data:
                        break
                    for event in feed(data):
                        self.process_message(event)
            for event in tick():
                self.process_message(event)

        def timeout() -> float:
            # the parser's private clock: an ESC waiting to be told apart from a sequence's start
            return ESCAPE_TICK_S if getattr(parser, "_timeout_time", 0) is not None else IDLE_WAIT_S

        try:
            while not self.exit_event.is_set():
                process(selector.select(timeout()))
            selector.unregister(fileno)
            process(selector.select(ESCAPE_TICK_S), final=True)
        finally:
            selector.close()
            with contextlib.suppress(EOFError, ParseError):
                for _event in feed(""):
                    pass
