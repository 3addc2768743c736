"""Benchmark (not a test): keypress-to-drawn latency of the TUI while the console pane is fed
20,000 lines/s, against an idle baseline in the same run; and the memory the feed costs.

The console stream goes through the real path: an async line iterator drained by the console
thread worker into the pane's inbox deque, flushed with Log.write_lines shortly after the first line of each batch. Latency is
measured from posting a key event to the callback Textual runs after the next screen refresh
(``call_after_refresh``) once the key's action has changed what is on screen. Run:
``python benchmarks/tui_console.py [SECONDS]``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events  # noqa: E402

from console.app import NitrodeckApp  # noqa: E402
from console.screens.frozen import SHELL, FrozenSource  # noqa: E402
from console.widgets.console_pane import ConsolePane  # noqa: E402
from console.widgets.header import StatusHeader  # noqa: E402

RATE = 20_000  # lines per second
CHUNK = 200  # lines per pacing step
PRESSES = 150
SIZE = (160, 48)


class FloodSource(FrozenSource):
    """The frozen world, with a debug enclave whose console prints RATE lines a second."""

    def __init__(self, rate: int) -> None:
        super().__init__(enclaves=[SHELL])
        self.rate = rate
        self.produced = 0

    async def _flood(self) -> AsyncIterator[str]:
        if self.rate <= 0:
            while True:
                await asyncio.sleep(3600)
        start = time.perf_counter()
        n = 0
        while True:
            for _ in range(CHUNK):
                n += 1
                yield f"[{n / self.rate:12.6f}] worker {n % 8}: request {n} handled in 0.{n % 97:02d} ms status=ok"
            self.produced = n
            ahead = n / self.rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)

    def console(self, enclave_id: str) -> AsyncIterator[str]:
        return self._flood()


class ProbeApp(NitrodeckApp):
    """F9 changes the header; the callback after the next refresh marks it drawn."""

    def __init__(self, source: FloodSource) -> None:
        super().__init__(source, refresh_seconds=0)
        self.drawn: asyncio.Event | None = None
        self.flip = False

    async def on_key(self, event: events.Key) -> None:
        if event.key != "f9":
            return  # every other key is the dashboard's (its own on_key saw it first)
        self.flip = not self.flip
        header = self.dashboard.query_one("#header", StatusHeader)
        header.styles.text_style = "bold" if self.flip else "none"
        done = self.drawn
        self.call_after_refresh(lambda: done.set() if done else None)


async def measure(rate: int, seconds: float) -> dict[str, float]:
    source = FloodSource(rate)
    app = ProbeApp(source)
    proc = psutil.Process(os.getpid())
    async with app.run_test(size=SIZE) as pilot:
        while app.snapshot is None:
            await pilot.pause(0.05)
        pane = app.query_one("#console", ConsolePane)
        await pilot.pause(1.0)  # let the feed reach steady state
        rss_start = proc.memory_info().rss
        flushed_start, produced_start, t_start = pane.flushed, source.produced, time.perf_counter()
        latencies: list[float] = []
        gap = seconds / PRESSES
        for _ in range(PRESSES):
            app.drawn = asyncio.Event()
            t0 = time.perf_counter()
            app.post_message(events.Key("f9", None))
            await asyncio.wait_for(app.drawn.wait(), timeout=10)
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(max(gap - latencies[-1] / 1000, 0.005))
        elapsed = time.perf_counter() - t_start
        rss_end = proc.memory_info().rss
        result = {
            "p50_ms": statistics.median(latencies),
            "p95_ms": statistics.quantiles(latencies, n=20)[18],
            "max_ms": max(latencies),
            "fed_lines_per_s": (source.produced - produced_start) / elapsed,
            "drawn_lines_per_s": (pane.flushed - flushed_start) / elapsed,
            "log_lines_kept": float(len(pane.log_widget.lines)),
            "inbox_backlog": float(len(pane.inbox)),
            "rss_mib": rss_end / 2**20,
            "rss_growth_mib": (rss_end - rss_start) / 2**20,
        }
    return result


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    print(f"nitrodeck TUI console benchmark: {SIZE[0]}x{SIZE[1]}, {PRESSES} key presses over ~{seconds:g} s each run")
    idle = asyncio.run(measure(0, seconds))
    loaded = asyncio.run(measure(RATE, seconds))
    for name, res in (("idle console (baseline)", idle), (f"console fed {RATE} lines/s", loaded)):
        print(f"\n{name}")
        for key, value in res.items():
            print(f"  {key:<18} {value:10.1f}")
    ratio = loaded["p95_ms"] / idle["p95_ms"] if idle["p95_ms"] else float("inf")
    print(f"\np95 keypress-to-drawn: {loaded['p95_ms']:.1f} ms under load vs {idle['p95_ms']:.1f} ms idle (x{ratio:.2f});"
          f" target <= 100 ms: {'met' if loaded['p95_ms'] <= 100 else 'NOT met'}")
    print(f"memory: {loaded['log_lines_kept']:.0f} lines kept (bounded by max_lines), backlog {loaded['inbox_backlog']:.0f},"
          f" RSS growth {loaded['rss_growth_mib']:.1f} MiB during the loaded run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
