"""The agent's journal endpoints against the emulator: SSE delivers `launched` and `exited` as they
happen, /events answers from the journal, and `nitrodeck_enclave_exits_total` counts the exit (the
read-only agent keeps an exit it noticed in memory; it writes no journal line)."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest

from core.ops.lifecycle import Lifecycle
from tests.agent_world import launch, script_eif, start_agent, write_world
from tests.conftest import wait_for
from tests.test_agent import samples

pytestmark = pytest.mark.slow


def read_sse(host: str, port: int, out: list[dict], done: threading.Event, path: str = "/events/stream") -> None:
    """Collect the stream's events (``event:`` + ``data:`` blocks) until the server closes it."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    done.set()  # connected: what happens from now on is delivered
    block: dict[str, str] = {}
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in block:
                out.append({"event": block["event"], "id": block.get("id"), "data": json.loads(block["data"])})
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value


def test_sse_delivers_launched_and_exited(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    lc = Lifecycle()
    eif = script_eif(lc, tmp_path, "brief", "echo working\nsleep 2\nexit 3\n")
    agent = start_agent(tmp_path)
    got: list[dict] = []
    connected = threading.Event()
    reader = threading.Thread(target=read_sse, args=(agent.host, agent.port, got, connected), daemon=True)
    reader.start()
    try:
        assert connected.wait(30)
        enclave_id = launch(lc, eif, "brief")  # by another process's Lifecycle: the journal is shared
        # nobody terminates it: the agent notices the exit itself (its watcher sees the enclave go)
        wait_for(lambda: {e["event"] for e in got if e["data"].get("enclave_id") == enclave_id} >= {"launched", "exited"},
                 timeout=60)
        launched = next(e for e in got if e["event"] == "launched")
        exited = next(e for e in got if e["event"] == "exited")
        assert launched["data"]["name"] == exited["data"]["name"] == "brief"
        assert exited["data"]["exit_status"] == 3 and exited["id"] == exited["data"]["time"]
        assert got.index(launched) < got.index(exited)

        events = agent.get_json("/events?since=10m")["events"]
        assert [e["event"] for e in events if e["enclave_id"] == enclave_id][-2:] == ["launched", "exited"]
        assert agent.get_json("/events?since=2000-01-01T00:00:00Z&limit=1")["events"][-1]["event"] == "exited"
        status, _, body = agent.request("GET", "/events?since=yesterday")
        assert status == 400 and json.loads(body)["error"]["where"] == "--since"
        _, _, metrics = agent.request("GET", "/metrics")
        exits = {s.labels["name"]: s.value for s in samples(metrics.decode())["nitrodeck_enclave_exits_total"]}
        assert exits == {"brief": 1.0}
        # the agent is read-only: it reports the exit it noticed from memory, and the journal has no line of it
        recorded = [json.loads(x) for x in (nd_home / "journal.jsonl").read_text().splitlines()]
        assert [e["event"] for e in recorded if e.get("enclave_id") == enclave_id] == ["launched"]
    finally:
        agent.stop()
    reader.join(timeout=30)
    assert not reader.is_alive()  # the stream ends when the agent stops
