"""The resources pane: the enclave CPU pool and who holds it, hugepages per size and node, the host
(CPU and memory sparklines on a fixed 0-100 % scale)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from console.widgets import show_text
from core.models import EnclaveInfo


def size_label(size_kb: int) -> str:
    return f"{size_kb // 1048576}G" if size_kb >= 1048576 else f"{size_kb // 1024}M"


def render_resources(resources: Any, enclaves: Sequence[EnclaveInfo]) -> Text:
    text = Text()
    if resources is None:
        text.append("resources unknown", style="dim")
        return text
    names = {e.enclave_id: e.label for e in enclaves}
    problem = getattr(resources, "problem", None)
    if problem:  # e.g. allocator.yaml refused: the pools below are empty for a reason, say which
        text.append(f"{problem}\n", style="bold red")
    cpus = resources.cpus
    text.append("CPU pool ", style="bold")
    if cpus is None:
        text.append("unknown\n", style="dim")
    else:
        text.append(f"{','.join(map(str, cpus.pool)) or '(empty)'}  free ")
        text.append(f"{','.join(map(str, cpus.free)) or 'none'}\n", style="green" if cpus.free else "bold red")
        for enclave_id, ids in sorted(cpus.held.items(), key=lambda kv: names.get(kv[0], kv[0])):
            text.append(f"  {names.get(enclave_id, enclave_id)[:24]:<24} holds {','.join(map(str, ids))}\n")
    # the column heads on their own line: at 120 columns the pane is 44 cells wide
    text.append("Hugepages", style="bold")
    text.append(" per size and NUMA node\n", style="dim")
    text.append("   size node  total   free   held  MiB free\n", style="dim")
    for pool in resources.hugepages:
        free_mib = pool.free * pool.size_kb // 1024
        node = "all" if pool.node is None else str(pool.node)
        text.append(f"  {size_label(pool.size_kb):>5} {node:>4} {pool.total:>6} {pool.free:>6} {pool.held_by_enclaves:>6}")
        text.append(f"  {free_mib:>8}\n", style="green" if free_mib else "dim")
    if not resources.hugepages:
        text.append("  none reserved\n", style="dim")
    host = resources.host
    if host is not None:
        gib = 1024**3
        text.append("Host ", style="bold")
        text.append(f"CPU {host.cpu_percent:5.1f}%  memory {host.mem_used / gib:.1f}/{host.mem_total / gib:.1f} GiB")
    return text


BARS = "▁▂▃▄▅▆▇█"


def percent_bars(samples: Sequence[float], width: int) -> str:
    """The newest ``width`` samples as bars on a fixed 0-100 % scale: a flat 3 % stays low and a
    busy host reads high, whatever the other samples are (Textual's Sparkline scales to min..max)."""
    out = []
    for value in list(samples)[-width:] if width > 0 else []:
        level = min(max(value, 0.0), 100.0) / 100.0
        out.append(BARS[min(int(level * len(BARS)), len(BARS) - 1)])
    return "".join(out)


class PercentSparkline(Widget):
    """A one-line sparkline of percentages on a fixed 0-100 scale, coloured by level."""

    DEFAULT_CSS = "PercentSparkline { height: 1; }"
    COMPONENT_CLASSES = {"sparkline--max-color", "sparkline--min-color"}

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._data: list[float] = []
        #: the bars on screen: a sample that draws the same bars (a steady host) repaints nothing
        self._drawn: str | None = None

    @property
    def data(self) -> list[float]:
        return self._data

    @data.setter
    def data(self, values: list[float]) -> None:
        self._data = list(values)
        width = self.size.width
        if not width or percent_bars(self._data, width) != self._drawn:
            self.refresh()

    def render(self) -> Text:
        bars = self._drawn = percent_bars(self._data, self.size.width)
        low = self.get_component_rich_style("sparkline--min-color")
        high = self.get_component_rich_style("sparkline--max-color")
        text = Text()
        # one span per run of bars of the same level, not one per bar: a sparkline is redrawn every host
        # sample, and each span is work for every frame that includes it
        run, run_high = "", False
        for bar in bars:
            is_high = bar in BARS[5:]
            if run and is_high != run_high:
                text.append(run, style=high if run_high else low)
                run = ""
            run += bar
            run_high = is_high
        if run:
            text.append(run, style=high if run_high else low)
        return text


class ResourcesPane(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static(render_resources(None, []), id="resources-body")
        with Horizontal(classes="spark-row"):
            yield Static("host CPU ", classes="spark-label")
            yield PercentSparkline(id="spark-cpu")
        with Horizontal(classes="spark-row"):
            yield Static("host mem ", classes="spark-label")
            yield PercentSparkline(id="spark-mem")

    def show(self, resources: Any, enclaves: Sequence[EnclaveInfo], cpu: Sequence[float], mem: Sequence[float]) -> None:
        show_text(self.query_one("#resources-body", Static), render_resources(resources, enclaves))
        self.show_host(cpu, mem)

    def show_host(self, cpu: Sequence[float], mem: Sequence[float]) -> None:
        """A new host sample between refreshes: only the sparklines repaint. Nothing changes size, so
        there is no layout pass (one every sample cost the idle dashboard more than all else it does);
        the Host line's numbers are those of the last refresh."""
        self.query_one("#spark-cpu", PercentSparkline).data = list(cpu)
        self.query_one("#spark-mem", PercentSparkline).data = list(mem)
