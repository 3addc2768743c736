"""The agent at scale: /metrics latency on a busy host, and a fleet refresh of 200 agents.

1. An emulated host with 4 running enclaves and 1,000 journal events; `nitrodeck serve` in its own
   process; 400 scrapes of /metrics over one keep-alive connection (as Prometheus scrapes). Prints
   p50/p95/max and p95 against the 50 ms target.
2. 200 simulated agents: the real AgentServer, 200 of them on 127.0.x.y ports in a child process,
   sharing one HostState of the same emulated host; `poll_fleet` over all of them (32 at a time). Prints the
   refresh time against the 2 s target and the Python memory the refresh allocated at its peak.

Only loopback traffic. Run: .venv/bin/python benchmarks/agent.py [--scrapes 400] [--hosts 200]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import console  # noqa: E402,F401 - registers the emulator backend
from tests.agent_world import launch, script_eif, start_agent, write_world  # noqa: E402
from tests.conftest import kill_world  # noqa: E402

METRICS_TARGET_MS = 50.0
FLEET_TARGET_S = 2.0


def journal_events(count: int) -> int:
    try:
        from core.ops.journal import Journal  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return 0
    journal = Journal()
    for i in range(count):
        journal.append("pinned", pin=f"bench-{i % 50}", pcr0="0" * 96)
    return len(journal.read())


def scrape_latency(home: Path, scrapes: int) -> list[float]:
    agent = start_agent(home)
    try:
        conn = http.client.HTTPConnection(agent.host, agent.port, timeout=20)
        times = []
        for _ in range(scrapes + 20):
            started = time.perf_counter()
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            resp.read()
            times.append((time.perf_counter() - started) * 1000)
            assert resp.status == 200
        conn.close()
        return times[20:]  # the first ones warm the connection and the interpreter
    finally:
        agent.stop()


def serve_simulated(hosts: int) -> int:
    """Child mode: ``hosts`` real AgentServers over one shared HostState; URLs on stdout, until stdin closes."""
    from console.agent.server import AgentServer
    from console.agent.state import HostState
    from core.ops.lifecycle import Lifecycle

    state = HostState(Lifecycle(read_only=True), safety_poll=3600)
    state.refresh()
    for i in range(hosts):
        server = AgentServer((f"127.0.{1 + i // 250}.{1 + i % 250}", 0), state, None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(server.url, flush=True)
    print("ready", flush=True)
    sys.stdin.read()
    return 0


def fleet_refresh(hosts: int) -> tuple[float, int, int]:
    """The simulated agents live in another process (as real ones live on other hosts): the refresh
    measured here is the fleet view's own cost, not the agents' competing for this interpreter."""
    from console.agent.fleet import HostEntry, poll_fleet

    child = subprocess.Popen([sys.executable, __file__, "--serve-simulated", str(hosts)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        urls = []
        for line in child.stdout:
            if line.strip() == "ready":
                break
            urls.append(line.strip())
        entries = [HostEntry(f"h{i}", url) for i, url in enumerate(urls)]
        poll_fleet(entries[:8], tokens={})  # warm-up
        tracemalloc.start()
        started = time.perf_counter()
        reports = poll_fleet(entries, tokens={})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return elapsed, peak, sum(1 for r in reports if r.reachable)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=400)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--serve-simulated", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulated:
        return serve_simulated(args.serve_simulated)
    home = Path(tempfile.mkdtemp(prefix="ndh-bench-", dir="/tmp"))
    os.environ["NITRODECK_HOME"] = str(home)
    os.environ["NITRODECK_BACKEND"] = "emulator"
    try:
        write_world(home)
        from core.ops.lifecycle import Lifecycle

        lc = Lifecycle()
        eif = script_eif(lc, home, "bench")
        for i in range(4):
            launch(lc, eif, f"bench-{i}")
        events = journal_events(1000)
        times = scrape_latency(home, args.scrapes)
        p95 = statistics.quantiles(times, n=20)[18]
        print(f"/metrics, 4 enclaves, {events} journal events, {len(times)} scrapes: "
              f"p50 {statistics.median(times):.2f} ms, p95 {p95:.2f} ms, max {max(times):.2f} ms; "
              f"p95 / target {METRICS_TARGET_MS:.0f} ms = {p95 / METRICS_TARGET_MS:.2f}")
        elapsed, peak, reachable = fleet_refresh(args.hosts)
        print(f"fleet refresh, {args.hosts} simulated agents ({reachable} reachable): {elapsed:.3f} s, "
              f"peak {peak / 1024 / 1024:.1f} MiB allocated; time / target {FLEET_TARGET_S:.0f} s = "
              f"{elapsed / FLEET_TARGET_S:.2f}")
    finally:
        kill_world(home)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
