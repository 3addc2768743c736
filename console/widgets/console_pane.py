"""The console pane: a bounded, batched view of an enclave's console with follow, search, wrap, save.

Lines arrive from a reader thread through :meth:`ConsolePane.push` into :attr:`ConsolePane.inbox` (a
deque: appends are thread-safe). The first line after a flush asks for the next one, which runs
``FLUSH_INTERVAL`` later and moves everything that arrived meanwhile into the Log with one
``write_lines`` call: a console printing tens of thousands of lines a second costs one repaint per
tick, and a quiet console costs nothing at all (no timer runs while no line arrives). While lines
keep coming, flushes are ``STREAM_FLUSH_INTERVAL`` apart: one repaint of the pane costs ~5-9 ms of
CPU on the 2-core machine whatever it shows (Textual draws every line of the scrolled pane again,
each new one through Rich), so a console printing steadily costs two or three of them a second,
not ten (at 100 lines/s that is a fresh screenful every repaint either way);
a line after a quiet spell still shows within ``FLUSH_INTERVAL``.
Scrolling up stops following the tail (the TAIL indicator says so); End or ``f`` resumes it.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from math import ceil
from pathlib import Path

from rich.cells import cell_len
from rich.highlighter import Highlighter
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.cache import LRUCache
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Log, Static

from core import home
from core.text import safe_text

MAX_LINES = 5000
FLUSH_INTERVAL = 0.1  # at most 10 repaints a second, however fast the console prints
#: flushes are at least this far apart while a console prints steadily (see the module docstring)
STREAM_FLUSH_INTERVAL = 0.4
#: the inbox is bounded too: if the UI falls behind, the oldest unseen lines are dropped
INBOX_LIMIT = 50_000
#: rendered console lines kept (a screenful is what is drawn again on every flush)
STRIP_CACHE = 512


class SearchHighlighter(Highlighter):
    def __init__(self) -> None:
        self.term = ""

    def highlight(self, text: Text) -> None:
        if self.term:
            text.highlight_regex(re.compile(re.escape(self.term), re.IGNORECASE), "black on yellow")
        if text.plain.startswith(("WARN", "ERROR", "panic", "Kernel panic")):
            text.stylize("bold yellow" if text.plain.startswith("WARN") else "bold red")


class ConsoleLog(Log):
    """A Log that tells its pane when the operator scrolls away from (or back to) the tail, and that
    takes a stream cheaply.

    Textual's Log, per ``write_lines``: assigns ``virtual_size`` (a reactive with ``layout=True``, so
    the whole screen is laid out and repainted again), starts a thread worker to measure the new
    lines' width, and renders every visible line through Rich on every repaint (its line cache is
    only filled while text is selected). At 10 flushes a second that was most of the dashboard's
    CPU while a console streamed. Here a flush measures its lines in place, updates the virtual size
    and the scrollbars without a layout (a scrollbar that appears or goes still asks for one, through
    its own reactive), and a rendered line is kept until it changes or scrolls out of the cache.
    """

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

    # -- the cheap stream (see the class docstring)

    def __init__(self, *, highlight: bool = False, max_lines: int | None = None, auto_scroll: bool = True,
                 id: str | None = None) -> None:
        super().__init__(highlight=highlight, max_lines=max_lines, auto_scroll=auto_scroll, id=id)
        #: lines pruned from the top so far: rendered lines are cached by their number in the whole
        #: stream, so pruning (every flush once the log is full) leaves the cache as it is
        self._dropped = 0
        self._strips: LRUCache[int, Strip] = LRUCache(STRIP_CACHE)
        #: DOMNode.rich_style walks every ancestor's styles; Log asks for it once per line per repaint
        self._line_style: Style | None = None

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> ConsoleLog:
        at_end = self.is_vertical_scroll_end
        auto_scroll = self.auto_scroll if scroll_end is None else scroll_end
        new_lines: list[str] = []
        for line in lines:
            new_lines.extend(line.splitlines())
        self._lines.extend(new_lines)
        if self.max_lines is not None and len(self._lines) > self.max_lines:
            self._prune_max_lines()
        if new_lines:
            self._width = max(self._width, max(map(self._cells, new_lines)))
        size = Size(self._width, len(self._lines))
        before = self.virtual_size
        if size != before:
            self.set_reactive(Widget.virtual_size, size)
            if not self.is_mounted:
                pass  # mounting sizes the scrollbars
            elif size.width == before.width and self.show_vertical_scrollbar and before.height > self.size.height:
                # only longer, with its scrollbar shown already: the thumb may not move a visible bit.
                # Following the tail, the position moves with it: judge both together.
                follows = auto_scroll and not self.is_vertical_scrollbar_grabbed and at_end
                self._move_bar(self.vertical_scrollbar, virtual=size.height,
                               position=self.max_scroll_y if follows else None)
            else:
                self._scroll_update(size)  # the scrollbars; one that appears or goes lays out on its own
        start = max(len(self._lines) - len(new_lines), 0)
        self.refresh_lines(start, len(self._lines) - start)
        if auto_scroll and not self.is_vertical_scrollbar_grabbed and at_end:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        return self

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        # following the tail moves the scroll position on every flush: tell the scrollbar quietly when
        # its thumb would be drawn the same, so that the assignment below repaints nothing
        if self.show_vertical_scrollbar:
            self._move_bar(self.vertical_scrollbar, position=new_value)
        super().watch_scroll_y(old_value, new_value)

    def _move_bar(self, bar: ScrollBar, *, virtual: int | None = None, position: float | None = None) -> None:
        """Give ``bar`` its new virtual size or position; it repaints only if it would draw differently
        (a repaint of the scrollbar was a third of each flush's cost)."""
        old = (bar.window_virtual_size, bar.window_size, bar.position)
        new = (old[0] if virtual is None else virtual, old[1],
               old[2] if position is None else bar.validate_position(position))
        if new == old:
            return
        if _thumb(bar, *old) != _thumb(bar, *new):
            bar.window_virtual_size, bar.position = new[0], new[2]
            return
        bar.set_reactive(ScrollBar.window_virtual_size, new[0])
        bar.set_reactive(ScrollBar.position, new[2])

    def _cells(self, line: str) -> int:
        """The line's width on screen: its length for ASCII without tabs (every line safe_text has
        passed), which is ~100 times cheaper than measuring cells."""
        if line.isascii() and "\t" not in line:
            return len(line)
        return cell_len(self._process_line(line))

    def _prune_max_lines(self) -> None:
        if self.max_lines is None or len(self._lines) <= self.max_lines:
            return
        remove = len(self._lines) - self.max_lines
        del self._lines[:remove]
        self._dropped += remove
        self._render_line_cache.clear()  # Log's own, filled only while text is selected, by index

    def refresh_lines(self, y_start: int, line_count: int = 1) -> None:
        for y in range(y_start, y_start + line_count):
            self._strips.discard(y + self._dropped)
        super().refresh_lines(y_start, line_count)

    def forget_rendered(self) -> None:
        """Draw every line afresh (the search term changed)."""
        self._render_line_cache.clear()
        self._strips.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line_style = None
        self.forget_rendered()

    def _render_line(self, y: int, scroll_x: int, width: int) -> Strip:
        style = self._line_style
        if style is None:
            style = self._line_style = self.rich_style
        if y >= len(self._lines):
            return Strip.blank(width, style)
        line = self._render_line_strip(y, style)
        return line.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, y)

    def clear(self) -> ConsoleLog:
        super().clear()
        self.forget_rendered()
        return self

    def _render_line_strip(self, y: int, rich_style: Style) -> Strip:
        if self.text_selection is not None:
            return super()._render_line_strip(y, rich_style)  # drawn fresh while text is selected
        key = y + self._dropped
        cached = self._strips.get(key)
        if cached is not None:
            return cached
        line = super()._render_line_strip(y, rich_style)
        self._strips[key] = line
        return line


def _thumb(bar: ScrollBar, virtual: int, window: int, position: float) -> list[Segment]:
    """What ``bar`` draws for this geometry (Textual's own drawing, without the colours)."""
    vertical = bar.vertical
    return list(ScrollBarRender.render_bar(
        size=bar.size.height if vertical else bar.size.width,
        virtual_size=ceil(virtual),
        window_size=ceil(window if window < virtual else 0),
        position=position,
        thickness=1,
        vertical=vertical,
    ).segments)


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
        #: when the last flush that moved lines ran (time.monotonic())
        self._last_flush = -1e9
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
        since = time.monotonic() - self._last_flush
        # lines right after a flush: a stream, so wait for the rest of its interval (never less than
        # FLUSH_INTERVAL, which gathers what arrives together)
        delay = max(FLUSH_INTERVAL, STREAM_FLUSH_INTERVAL - since) if since < 2 * STREAM_FLUSH_INTERVAL else FLUSH_INTERVAL
        self.set_timer(delay, self.flush, name="console-flush")

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
        self._last_flush = time.monotonic()
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
        log.forget_rendered()
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
