"""A frozen fleet (three parents, fixed answers) for the fleet view's screenshot and snapshot test."""

from __future__ import annotations

from console.agent.fleet import HostReport
from console.agent.fleet_app import FleetApp

PCR0 = "37266be533514ced4a63cbf8097ce0e9f73bc2e6933747b060265f24ec859ba96caf369cb6dca73abbdc3dfaa595db7f"


def _enclave(name: str, enclave_id: str, verdict: str) -> dict[str, object]:
    return {"EnclaveName": name, "EnclaveID": enclave_id, "ProcessID": 4242, "EnclaveCID": 16, "NumberOfCPUs": 2,
            "CPUIDs": [1, 5], "MemoryMiB": 2634, "State": "RUNNING", "Flags": "NONE",
            "Measurements": {"PCR0": PCR0}, "ExpectedPCRs": verdict}


FROZEN_FLEET = [
    HostReport("signer-a", "https://10.0.1.17:9181", True, "i-0a1b2c3d4e5f60718",
               enclaves=[_enclave("signer", "i-0a1b2c3d4e5f60718-enc18c5e3a3a9d2f1b0", "match")],
               running=1, expected=1, pcr={"match": 1}, free_cpus=0, pool_cpus=2, elapsed_ms=12),
    HostReport("signer-b", "https://10.0.2.41:9181", True, "i-0f9e8d7c6b5a49382",
               enclaves=[_enclave("signer", "i-0f9e8d7c6b5a49382-enc18c5e3b7710c4d2", "mismatch")],
               running=1, expected=1, pcr={"mismatch": 1}, free_cpus=0, pool_cpus=2,
               last_exit={"event": "exited", "name": "signer", "time": "2026-12-02T14:03:11.204Z", "exit_status": 1},
               elapsed_ms=15),
    HostReport("signer-c", "https://10.0.3.9:9181", False, None, expected=1,
               error="timed out", elapsed_ms=3001),
]


def frozen_fleet_app() -> FleetApp:
    return FleetApp(lambda: list(FROZEN_FLEET), every=3600)


async def render_fleet(size: tuple[int, int]) -> str:
    """The fleet view with the first host's enclaves shown (what `make screenshots` writes)."""
    app = frozen_fleet_app()
    async with app.run_test(size=size) as pilot:
        for _ in range(50):
            await pilot.pause(0.05)
            if app.reports:
                break
        await pilot.press("enter")
        await pilot.pause(0.1)
        return app.export_screenshot(title="nitrodeck fleet")
