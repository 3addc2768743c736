"""core.channel.bridge: TCP loopback <-> emulated vsock, concurrency, half-close, refusal, SIGTERM stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import home
from core.channel.bridge import Bridge, ListenAddress, parse_host_port
from core.channel.vsock import PARENT_CID, Transport
from core.errors import UsageError
from tests.conftest import REPO

CID = 16
PORT = 7000


async def _upper_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads everything until the client half-closes, then answers: proves half-close both ways."""
    data = await reader.read()
    if data.startswith(b"slow:"):
        await asyncio.sleep(float(data[5:]))
    writer.write(data.upper() + b"|" + str(len(data)).encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def enclave_side(tmp_path: Path) -> AsyncIterator[Path]:
    server = await Transport(CID, tmp_path).start_server(_upper_until_eof, PORT)
    try:
        yield tmp_path
    finally:
        server.close()


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return answer


async def test_many_concurrent_connections_with_half_close(enclave_side: Path) -> None:
    bridge = Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, enclave_side))
    async with bridge:
        payloads = [os.urandom(1 + i * 997) for i in range(60)]
        payloads.append(b"x" * (3 * 1024 * 1024))  # larger than every buffer: exercises drain()
        answers = await asyncio.gather(*(_exchange(bridge.port, p) for p in payloads))
    for sent, got in zip(payloads, answers, strict=True):
        assert got == sent.upper() + b"|" + str(len(sent)).encode()
    assert bridge.stats.accepted == len(payloads) and bridge.stats.active == 0
    assert bridge.stats.bytes_up == sum(len(p) for p in payloads)


async def test_backpressure_a_stalled_enclave_stalls_the_client(tmp_path: Path) -> None:
    """While the enclave side reads nothing, the bridge must not soak up what the client sends."""
    total = 32 * 1024 * 1024
    release = asyncio.Event()
    received = asyncio.get_running_loop().create_future()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        count = 0
        while chunk := await reader.read(1 << 20):
            count += len(chunk)
        received.set_result(count)
        writer.close()

    server = await Transport(CID, tmp_path).start_server(stalled, PORT)
    try:
        async with Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, tmp_path)) as bridge:
            reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
            sent = 0

            async def push() -> None:
                nonlocal sent
                chunk = b"b" * (256 * 1024)
                while sent < total:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                writer.write_eof()

            pusher = asyncio.create_task(push())
            last, steady = -1, 0
            while steady < 6 and sent < total:  # wait until the client's writes stop being accepted
                await asyncio.sleep(0.05)
                steady, last = (steady + 1, last) if sent == last else (0, sent)
            assert sent < total // 2, f"the bridge accepted {sent} bytes that the enclave never read"
            release.set()
            await asyncio.wait_for(pusher, 60)
            assert await asyncio.wait_for(received, 60) == total  # nothing lost once it flows
            writer.close()
    finally:
        server.close()


async def test_unreachable_enclave_closes_the_client(tmp_path: Path) -> None:
    async with Bridge(ListenAddress("127.0.0.1", 0), 99, PORT, Transport(PARENT_CID, tmp_path)) as bridge:
        assert await _exchange(bridge.port, b"hello") == b""
        assert bridge.stats.failed_upstream == 1


async def test_stop_lets_in_flight_finish_and_refuses_new(enclave_side: Path) -> None:
    bridge = Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, enclave_side))
    await bridge.start()
    port = bridge.port
    in_flight = asyncio.create_task(_exchange(port, b"slow:0.5"))
    await asyncio.sleep(0.2)
    assert await bridge.stop(deadline=10) == 0
    assert await in_flight == b"SLOW:0.5|8"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_cuts_connections_at_the_deadline(enclave_side: Path) -> None:
    bridge = Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, enclave_side))
    await bridge.start()
    stuck = asyncio.create_task(_exchange(bridge.port, b"slow:30"))
    await asyncio.sleep(0.2)
    assert await bridge.stop(deadline=0.2) == 1
    assert await stuck == b""


def test_non_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    t = Transport(PARENT_CID, tmp_path)
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.com"):
        with pytest.raises(UsageError, match="non-loopback"):
            Bridge(ListenAddress(host, 8888), CID, PORT, t)
    Bridge(ListenAddress("0.0.0.0", 8888), CID, PORT, t, allow_non_loopback=True)  # constructed, not started
    for host in ("127.0.0.1", "127.8.9.1", "::1", "localhost"):
        Bridge(ListenAddress(host, 8888), CID, PORT, t)


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:8888") == ListenAddress("127.0.0.1", 8888)
    assert parse_host_port("[::1]:0") == ListenAddress("::1", 0)
    for bad in ("8888", ":1", "h:99999", "h:x", "[::1]8", "a" * 400):
        with pytest.raises(UsageError):
            parse_host_port(bad)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_parse_host_port_fuzz(text: str) -> None:
    try:
        address = parse_host_port(text)
    except UsageError:
        return
    assert 0 <= address.port <= 65535 and address.host


def test_cli_bridge_stops_cleanly_on_sigterm(nd_home: Path) -> None:
    vsock = home.emulator_vsock_dir()

    async def scenario() -> tuple[int, bytes, bytes]:
        server = await Transport(CID, vsock).start_server(_upper_until_eof, 5005)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "bridge", "--listen", "127.0.0.1:0", "--cid", str(CID),
            stderr=subprocess.PIPE, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        line = b""
        while b"listening" not in line and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
        found = re.search(rb"127\.0\.0\.1:(\d+)", line)
        assert found, line
        port = int(found.group(1))
        assert await _exchange(port, b"ping") == b"PING|4"
        in_flight = asyncio.create_task(_exchange(port, b"slow:0.6"))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        answer = await in_flight
        status = await asyncio.wait_for(proc.wait(), 20)
        rest = await proc.stderr.read()
        server.close()
        return status, answer, rest

    status, answer, log = asyncio.run(scenario())
    assert answer == b"SLOW:0.6|8"
    assert status == 0
    assert b"bridge stopped" in log and b"Traceback" not in log
