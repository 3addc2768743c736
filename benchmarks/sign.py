"""Sign round trips: in-process vs the payload over emulated vsock vs through the TCP bridge.

    .venv/bin/python -m benchmarks.sign [--seconds 3] [--clients 8]

Each mode runs ``--clients`` concurrent callers for ``--seconds``; every round trip is a full
``sign`` (ECDSA secp256k1 + an NSM attestation document). "in-process" calls the payload's method
directly (same keys code, same NSM socket), so the ratios show what the protocol, vsock and
bridge hops cost. The NSM runs in its own process, as the emulator's supervisor would run it.
Prints requests/s, p50/p99 latency and the ratios; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CID = 16
PORT = 5005
PCRS = {0: b"\x30" * 48, 1: b"\x31" * 48, 2: b"\x32" * 48}


def serve_nsm(path: str) -> None:
    """Helper-process mode: host an emulated NSM until SIGTERM."""
    from emulator.nsm import EmulatedNsm, start_nsm_server

    nsm = EmulatedNsm("i-0123456789abcdef0-enc0000000000000016", dict(PCRS), False, "i-0123456789abcdef0", None)
    server = start_nsm_server(nsm, Path(path))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("nsm ready", flush=True)
    try:
        signal.pause()
    finally:
        server.close()


def _spawn(argv: list[str], env: dict[str, str], ready: str, out: Path) -> subprocess.Popen[bytes]:
    fh = out.open("wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    deadline = time.monotonic() + 30
    while ready not in out.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{argv[2:4]} did not start:\n{out.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


async def _measure(
    call: Callable[[int], Awaitable[Any]], clients: int, seconds: float
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = 0
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                await call(w * 1_000_000 + i)
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
            latencies.append(time.perf_counter() - start)
            i += 1

    began = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    return time.monotonic() - began, latencies, errors


def _row(name: str, elapsed: float, lat: list[float], errors: int) -> float:
    rps = len(lat) / elapsed if elapsed else 0.0
    ordered = sorted(lat) or [0.0]
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"{name:<22} {rps:9.1f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   errors {errors}")
    return rps


async def run(seconds: float, clients: int, root: Path) -> None:
    from core.attest.nsm import NsmClient
    from core.channel.protocol import ProtocolClient
    from core.channel.vsock import PARENT_CID, Transport
    from enclave_app.keys import KeyStore
    from enclave_app.methods import EnclaveContext, Nsm, call_method

    vsock = root / "emulator" / "vsock"
    vsock.mkdir(parents=True)
    nsm_path = root / "nsm.sock"
    env = {**os.environ, "NITRODECK_HOME": str(root), "NITRODECK_BACKEND": "emulator", "PYTHONPATH": str(REPO)}
    procs = [_spawn([sys.executable, "-m", "benchmarks.sign", "--serve-nsm", str(nsm_path)], env, "nsm ready",
                    root / "nsm.log")]  # fmt: skip
    try:
        enclave_env = {**env, "NITRODECK_VSOCK_DIR": str(vsock), "NITRODECK_ENCLAVE_CID": str(CID),
                       "NITRODECK_NSM_SOCKET": str(nsm_path)}  # fmt: skip
        procs.append(_spawn([sys.executable, "-m", "enclave_app"], enclave_env, "listening", root / "payload.log"))
        procs.append(_spawn([sys.executable, "-m", "console", "bridge", "--listen", "127.0.0.1:0", "--cid", str(CID)],
                            env, "listening", root / "bridge.log"))  # fmt: skip
        found = re.search(r"127\.0\.0\.1:(\d+)", (root / "bridge.log").read_text())
        assert found
        bridge_port = int(found.group(1))

        nsm = Nsm(NsmClient.open(socket_path=str(nsm_path)))
        ctx = EnclaveContext(keys=KeyStore.generate(os.urandom(32)), nsm=nsm, log=lambda _m: None)

        def params(i: int) -> dict[str, Any]:
            return {"payload": b"benchmark payload %d" % i, "scheme": "secp256k1", "nonce": i.to_bytes(8, "big")}

        print(f"{clients} concurrent clients, {seconds:g} s per mode, sign secp256k1 + attestation\n")
        results = {}
        results["in-process"] = _row("in-process", *await _measure(
            lambda i: call_method(ctx, "sign", params(i)), clients, seconds))  # fmt: skip
        nsm.close()

        for name, connect in (
            ("emulated vsock", lambda: ProtocolClient.connect_vsock(Transport(PARENT_CID, vsock), CID, PORT)),
            ("bridge (TCP->vsock)", lambda: ProtocolClient.connect_tcp("127.0.0.1", bridge_port)),
        ):
            conns = [await connect() for _ in range(clients)]

            async def over(i: int, conns: list[ProtocolClient] = conns) -> Any:
                return await conns[i // 1_000_000].call("sign", params(i), timeout=30)

            results[name] = _row(name, *await _measure(over, clients, seconds))
            for c in conns:
                await c.close()
        base = results["in-process"] or 1.0
        print()
        for name in ("emulated vsock", "bridge (TCP->vsock)"):
            print(f"ratio {name} / in-process: {results[name] / base:.2f}x")
        print("target: bridge >= 0.50x of in-process")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--serve-nsm", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_nsm:
        serve_nsm(args.serve_nsm)
        return
    with tempfile.TemporaryDirectory(prefix="nd-bench-", dir="/tmp") as tmp:
        asyncio.run(run(max(0.5, min(args.seconds, 60)), max(1, min(args.clients, 64)), Path(tmp)))


if __name__ == "__main__":
    main()
