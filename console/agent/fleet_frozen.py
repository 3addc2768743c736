"""A frozen fleet (three parents, fixed answers) for the fleet view's screenshots and snapshot tests, and
the first parent's agent answering fixed JSON, so that its drill-down dashboard is frozen too."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from console.agent.fleet import HostEntry, HostReport
from console.agent.fleet_app import FleetApp
from console.agent.remote import RemoteSource

PCR0 = "37266be533514ced4a63cbf8097ce0e9f73bc2e6933747b060265f24ec859ba96caf369cb6dca73abbdc3dfaa595db7f"
FROZEN_NOW = datetime(2026, 12, 2, 14, 5, 0, tzinfo=UTC)
SIGNER_A = "i-0a1b2c3d4e5f60718"
SIGNER_A_ENCLAVE = f"{SIGNER_A}-enc18c5e3a3a9d2f1b0"


def _pcr(seed: str) -> str:
    return hashlib.sha384(seed.encode()).hexdigest()


def _enclave(name: str, enclave_id: str, verdict: str) -> dict[str, object]:
    return {"EnclaveName": name, "EnclaveID": enclave_id, "ProcessID": 4242, "EnclaveCID": 16, "NumberOfCPUs": 2,
            "CPUIDs": [1, 5], "MemoryMiB": 2634, "State": "RUNNING", "Flags": "NONE",
            "Measurements": {"PCR0": PCR0}, "ExpectedPCRs": verdict}


FROZEN_FLEET = [
    HostReport("signer-a", "https://10.0.1.17:9181", True, SIGNER_A,
               enclaves=[_enclave("signer", SIGNER_A_ENCLAVE, "match")],
               running=1, expected=1, pcr={"match": 1}, free_cpus=0, pool_cpus=2, elapsed_ms=12),
    HostReport("signer-b", "https://10.0.2.41:9181", True, "i-0f9e8d7c6b5a49382",
               enclaves=[_enclave("signer", "i-0f9e8d7c6b5a49382-enc18c5e3b7710c4d2", "mismatch")],
               running=1, expected=1, pcr={"mismatch": 1}, free_cpus=0, pool_cpus=2,
               last_exit={"event": "exited", "name": "signer", "time": "2026-12-02T14:03:11.204Z", "exit_status": 1},
               elapsed_ms=15),
    HostReport("signer-c", "https://10.0.3.9:9181", False, None, expected=1,
               error="timed out", elapsed_ms=3001),
]


def signer_a_status() -> dict[str, Any]:
    """signer-a's /status as its agent serves it (console/agent/server.py): one enclave, pinned, matching."""
    pcrs = {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": _pcr("signer1"), "PCR2": _pcr("signer2")}
    started = FROZEN_NOW - timedelta(days=6, hours=2, minutes=41)

    def at(when: datetime) -> str:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    launched = {"time": at(started), "event": "launched", "enclave_id": SIGNER_A_ENCLAVE, "name": "signer",
                "eif_path": "/opt/signer/signer.eif", "pcr0": PCR0, "cid": 16, "cpu_ids": [1, 5], "memory_mib": 2634}
    pinned = {**launched, "time": at(started + timedelta(seconds=2.4)), "event": "pinned", "pin": "signer"}
    return {
        "backend": "real", "backend_display": "nitro-cli", "read_only": True,
        "read_only_reason": {"kind": "flag", "detail": "read-only: the agent", "hint": "the agent serves GET only"},
        "driver_loaded": True, "warnings": [], "instance_id": SIGNER_A,
        "taken_at": (FROZEN_NOW - timedelta(seconds=4)).isoformat(timespec="seconds"),
        "enclaves": [{
            "EnclaveName": "signer", "EnclaveID": SIGNER_A_ENCLAVE, "ProcessID": 4242, "EnclaveCID": 16,
            "NumberOfCPUs": 2, "CPUIDs": [1, 5], "MemoryMiB": 2634, "State": "RUNNING", "Flags": "NONE",
            "Measurements": pcrs, "ImageName": "signer", "ImageVersion": "2.3.0",
            "Metadata": {"BuildTime": "2026-11-25T16:20:11Z", "BuildTool": "nitro-cli", "BuildToolVersion": "1.4.2",
                         "OperatingSystem": "Linux", "KernelVersion": "4.14.256",
                         "DockerInfo": {"RepoTags": ["signer:2.3.0"], "Config": {"Cmd": ["/usr/bin/signer"]}}},
            "ExpectedPCRs": "match", "ExpectedPCRsPin": "signer", "ExpectedPCRsPinnedBy": "image",
            "ExpectedMeasurements": {k: v for k, v in pcrs.items() if k.startswith("PCR")},
            "StartedAt": started.isoformat(timespec="seconds"),
        }],
        "exited": [], "journal": {"path": "/var/lib/nitrodeck/journal.jsonl", "warnings": []},
        "cpu_pool": {"source": "sysfs", "pool": [1, 5], "free": [], "held": {SIGNER_A_ENCLAVE: [1, 5]}},
        "hugepages": [{"size_kb": 1048576, "node": 0, "total": 3, "free": 0, "held_by_enclaves": 3, "source": "sysfs"},
                      {"size_kb": 2048, "node": 0, "total": 0, "free": 0, "held_by_enclaves": 0, "source": "sysfs"}],
        "host": {"cpu_percent": 7.5, "mem_total": 16 * 1024**3, "mem_used": int(12.9 * 1024**3)},
        "allocator_error": None,
        "_events": [launched, pinned],
    }


class FrozenAgent:
    """signer-a's agent, answering fixed JSON (the parse and the dashboard are the real ones)."""

    def __init__(self) -> None:
        self.status = signer_a_status()
        self.events = {"events": self.status.pop("_events")}

    def get(self, path: str) -> tuple[int, Any]:
        # through JSON text, as the network would carry it
        if path == "/status":
            return 200, json.loads(json.dumps(self.status))
        if path.startswith("/events?"):
            return 200, json.loads(json.dumps(self.events))
        return 404, {"error": "no such endpoint"}


def frozen_opener(name: str) -> RemoteSource:
    report = next(r for r in FROZEN_FLEET if r.name == name)
    return RemoteSource(HostEntry(report.name, report.url), FrozenAgent(), clock=lambda: FROZEN_NOW, watch=False)


def frozen_fleet_app() -> FleetApp:
    # no periodic refresh of the hosts, nor of an opened dashboard: every render of a scene is the same
    return FleetApp(lambda: list(FROZEN_FLEET), every=3600, opener=frozen_opener, dashboard_refresh=0)


async def settle_fleet(pilot: Any) -> None:
    """The hosts listed and the first one highlighted (its enclaves below the table)."""
    app = pilot.app
    for _ in range(100):
        await pilot.pause(0.05)
        if app.reports and app.selected:
            break
    await pilot.pause(0.1)


async def render_fleet(size: tuple[int, int]) -> str:
    """The fleet view, the first host highlighted and its enclaves listed (what `make screenshots` writes)."""
    app = frozen_fleet_app()
    async with app.run_test(size=size) as pilot:
        await settle_fleet(pilot)
        return app.export_screenshot(title="nitrodeck fleet")


async def open_first_host(pilot: Any) -> None:
    """Enter on signer-a: its dashboard, read through its (frozen) agent, settled."""
    from textual.widgets import Footer

    from console.agent.fleet_app import HostDashboard

    app = pilot.app
    await settle_fleet(pilot)
    await pilot.press("enter")
    for _ in range(200):
        await pilot.pause(0.05)
        screen = app.screen
        if isinstance(screen, HostDashboard) and screen.snapshot is not None:
            footer = screen.query_one(Footer)
            if footer.children and all(key.region.width for key in footer.children):
                break
    app.clear_notifications()
    await pilot.pause(0.1)


async def render_fleet_dashboard(size: tuple[int, int]) -> str:
    app = frozen_fleet_app()
    async with app.run_test(size=size) as pilot:
        await open_first_host(pilot)
        return app.export_screenshot(title="nitrodeck fleet - signer-a")
