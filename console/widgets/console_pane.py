"""The console pane: a bounded, batched view of an enclave's console with follow, search, wrap, save.

Lines arrive from a reader thread through :meth:`ConsolePane.push` into :attr:`ConsolePane.inbox` (a
deque: appends are thread-safe). The first line after a flush asks for the next one, which runs
``FLUSH_INTERVAL`` later and moves everything that arrived meanwhile into the Log with one
``write_lines`` call: a console printing tens of thousands of lines a second costs one repaint per
tick, and a quiet console costs nothing at all (no timer runs while no line arrives).
Scrolling up stops following the tail (the TAIL indicator says so); End or ``f`` resumes it.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime
from pathlib import Path

from rich.highlighter import Highlighter
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Log, Static

from core import home
from core.text import safe_text

MAX_LINES = 5000
FLUSH_INTERVAL = 0.1  # at most 10 repaints a second, however fast the console prints
#: the inbox is bounded too: if the UI falls behind, the oldest unseen lines are dropped
INBOX_LIMIT = 50_000


class SearchHighlighter(Highlighter):
    def __init__(self) -> None:
        self.term = ""

    def highlight(self, text: Text) -> None:
        if self.term:
            text.highlight_regex(re.compile(re.escape(self.term), re.IGNORECASE), "black on yellow")
        if text.plain.startswith(("WARN", "ERROR", "panic", "Kernel panic")):
            text.stylize("bold yellow" if text.plain.startswith("WARN") else "bold red")


class ConsoleLog(Log):
    """A Log that tells its pane when the operator scrolls away from (or back to) the tail."""

    class FollowChanged(Message):
        def __init__(self, follow: bool) -> None:
            super().__init__()
            self.follow = follow

    def _away(self) -> None:
        self.post_message(self.FollowChanged(False))

    def _back_if_end(self) -> None:
        if self.is_vertical_scroll_end:
            self.post_message(self.FollowChanged(True))

    def action_scroll_up(self) -> None:
        super().action_scroll_up()
        self._away()

    def action_page_up(self) -> None:
        super().action_page_up()
        self._away()

    def action_scroll_home(self) -> None:
        super().action_scroll_home()
        self._away()

    def action_scroll_end(self) -> None:
        super().action_scroll_end()
        self.post_message(self.FollowChanged(True))

    def action_scroll_down(self) -> None:
        super().action_scroll_down()
        self.call_after_refresh(self._back_if_end)

    def action_page_down(self) -> None:
        super().action_page_down()
        self.call_after_refresh(self._back_if_end)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        super()._on_mouse_scroll_up(event)
        self._away()

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        super()._on_mouse_scroll_down(event)
        self.call_after_refresh(self._back_if_end)


class ConsolePane(Vertical):
    class LinesArrived(Message):
        """Posted (thread-safely) by the first line after a flush."""

    follow: reactive[bool] = reactive(True)
    wrap: reactive[bool] = reactive(False)

    def __init__(self, max_lines: int = MAX_LINES, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.max_lines = max_lines
        self.inbox: deque[str] = deque(maxlen=INBOX_LIMIT)
        self._flush_wanted = False
        #: raw lines as the enclave printed them (the Log may hold them wrapped)
        self.raw: deque[str] = deque(maxlen=max_lines)
        self.enclave_label = ""
        self.note = ""
        self.term = ""
        self._matches: list[int] = []
        self._match_at = -1
        self._highlighter = SearchHighlighter()
        #: lines moved from the inbox into the view since start (the benchmark reads it)
        self.flushed = 0

    def compose(self) -> ComposeResult:
        with Horizontal(classes="console-bar"):
            yield Static("", id="console-title")
            yield Static("", id="tail-indicator")
        log = ConsoleLog(highlight=True, max_lines=self.max_lines, auto_scroll=False, id="console-log")
        log.highlighter = self._highlighter
        yield log
        yield Input(placeholder="search the console (enter: find, esc: close)", id="console-search", classes="hidden")

    def on_mount(self) -> None:
        self._update_bar()

    def push(self, line: str) -> None:
        """Queue a line from any thread; a flush follows within ``FLUSH_INTERVAL``."""
        self.inbox.append(line)
        if not self._flush_wanted:
            self._flush_wanted = True
            self.post_message(self.LinesArrived())

    def push_many(self, lines: list[str]) -> None:
        for line in lines:
            self.push(line)

    @on(LinesArrived)
    def _lines_arrived(self) -> None:
        self.set_timer(FLUSH_INTERVAL, self.flush, name="console-flush")

    @property
    def log_widget(self) -> ConsoleLog:
        return self.query_one(ConsoleLog)

    # -- feeding

    def reset(self, label: str, note: str = "") -> None:
        """Start over for another enclave (or its kept log)."""
        self.inbox.clear()
        self.raw.clear()
        self.log_widget.clear()
        self.enclave_label = label
        self.note = note
        self.follow = True
        # another enclave: its own view, not the last one's search and wrap
        self.term = ""
        self._highlighter.term = ""
        self._matches = []
        self._match_at = -1
        self.set_reactive(ConsolePane.wrap, False)
        self.query_one("#console-search", Input).add_class("hidden")
        self._update_bar()

    def set_note(self, note: str) -> None:
        self.note = note
        self._update_bar()

    def flush(self) -> None:
        # before draining: a line pushed from now on either is drained below or asks for a new flush
        self._flush_wanted = False
        if not self.inbox:
            return
        batch: list[str] = []
        pop = self.inbox.popleft
        try:
            while True:
                batch.append(pop())
        except IndexError:
            pass
        self.flushed += len(batch)
        self.raw.extend(batch)
        log = self.log_widget
        log.write_lines(self._shape(batch), scroll_end=self.follow and not log.is_vertical_scrollbar_grabbed)

    def _shape(self, lines: list[str]) -> list[str]:
        # the enclave wrote these: Log removes only \x00-\x14, so ESC sequences would reach the terminal
        lines = [safe_text(line) for line in lines]
        if not self.wrap:
            return lines
        width = max(self.log_widget.scrollable_content_region.width - 1, 20)
        out: list[str] = []
        for line in lines:
            if len(line) <= width:
                out.append(line)
            else:
                out.extend(line[i : i + width] for i in range(0, len(line), width))
        return out

    def _rerender(self) -> None:
        log = self.log_widget
        log.clear()
        log.write_lines(self._shape(list(self.raw)), scroll_end=self.follow)

    # -- follow / wrap

    @on(ConsoleLog.FollowChanged)
    def _follow_changed(self, event: ConsoleLog.FollowChanged) -> None:
        event.stop()
        self.follow = event.follow

    def watch_follow(self, follow: bool) -> None:
        if follow and self.is_mounted:
            self.log_widget.scroll_end(animate=False)
        self._update_bar()

    def on_resize(self, event: events.Resize) -> None:
        # wrapped lines were cut for the old width
        if self.wrap and self.raw:
            self._rerender()

    def watch_wrap(self, wrap: bool) -> None:
        if self.is_mounted:
            self._rerender()
            self._update_bar()

    def _update_bar(self) -> None:
        if not self.is_mounted:
            return
        title = Text()
        title.append("Console ", style="bold")
        title.append(safe_text(self.enclave_label) if self.enclave_label else "(select a debug-mode enclave)")
        if self.note:
            title.append(f" - {self.note}", style="italic")
        if self.term:
            found = len(self._matches)
            title.append(f"  /{self.term}: ")
            title.append(f"match {self._match_at + 1}/{found}" if found else "no match",
                         style="bold" if found else "bold red")
        self.query_one("#console-title", Static).update(title)
        tail = self.query_one("#tail-indicator", Static)
        parts = Text()
        parts.append(" WRAP " if self.wrap else " nowrap ", style="reverse" if self.wrap else "dim")
        parts.append(" ")
        parts.append(" TAIL " if self.follow else " PAUSED ", style="bold reverse green" if self.follow else "bold reverse yellow")
        tail.update(parts)
        tail.set_class(self.follow, "-following")

    # -- search

    def open_search(self) -> None:
        box = self.query_one("#console-search", Input)
        box.remove_class("hidden")
        box.value = self.term
        box.focus()

    @on(Input.Submitted, "#console-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.search(event.value)
        event.input.add_class("hidden")
        self.log_widget.focus()

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#console-search", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            box.add_class("hidden")
            self.log_widget.focus()

    def search(self, term: str) -> int:
        """Highlight ``term`` and jump to its latest match; returns the number of matching lines."""
        self.term = term.strip()
        self._highlighter.term = self.term
        log = self.log_widget
        log._render_line_cache.clear()
        needle = self.term.lower()
        self._matches = [i for i, line in enumerate(log.lines) if needle and needle in line.lower()]
        self._match_at = len(self._matches) - 1
        if self._matches:
            self._jump()
        log.refresh()
        self._update_bar()
        return len(self._matches)

    def next_match(self, step: int = 1) -> None:
        """The next match (``step`` -1: the previous one), wrapping around."""
        if not self._matches:
            return
        self._match_at = (self._match_at + step) % len(self._matches)
        self._jump()
        self._update_bar()

    def _jump(self) -> None:
        self.follow = False
        line = self._matches[self._match_at]
        log = self.log_widget
        log.scroll_to(y=max(line - log.size.height // 2, 0), animate=False)

    # -- save

    def save(self, folder: Path, enclave_id: str, now: datetime) -> Path:
        """Write the kept raw lines to a new file; returns its path."""
        home.ensure(folder)  # private, parents included
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", enclave_id or "console")[:80]
        path = folder / f"console-{safe}-{now.strftime('%Y%m%dT%H%M%S')}.log"
        n = 1
        while path.exists():
            path = folder / f"console-{safe}-{now.strftime('%Y%m%dT%H%M%S')}-{n}.log"
            n += 1
        with open(path, "x", encoding="utf-8") as fh:
            for line in self.raw:
                fh.write(line + "\n")
        return path
