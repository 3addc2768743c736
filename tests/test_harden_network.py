"""Issue 9 item 5: network services under hostile clients.

Idle or slow clients must not starve working ones (idle timeouts, frame-read timeouts, fair
admission that closes the longest-idle connection instead of the newcomer), and the vsock proxy
connects only to addresses that pass the allowlist when the connection is made.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from core.channel.bridge import Bridge, ListenAddress
from core.channel.protocol import (
    ConnectionActivity,
    ProtocolClient,
    longest_idle,
    serve_connection,
)
from core.channel.proxy import AllowEntry, VsockProxy
from core.channel.vsock import PARENT_CID, Transport

CID = 16
PORT = 7100


async def _echo_dispatch(method: str, params: Mapping[str, Any]) -> Any:
    return {"method": method}


async def _read_until_closed(reader: asyncio.StreamReader, wait: float = 30) -> bytes:
    return await asyncio.wait_for(reader.read(), wait)


async def test_protocol_server_closes_idle_and_stalled_connections() -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, _echo_dispatch, idle_timeout=0.3, body_timeout=0.3), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        # idle: connects, never sends a byte -> the server ends the connection (EOF), not us
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_until_closed(reader) == b""
        writer.close()
        # slow: two bytes of a frame header, then nothing
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\0\0")
        await writer.drain()
        assert await _read_until_closed(reader) == b""
        writer.close()
        # a working client is still served
        client = await ProtocolClient.connect_tcp("127.0.0.1", port)
        try:
            assert await client.call("health") == {"method": "health"}
        finally:
            await client.close()


async def test_a_long_request_is_not_idle() -> None:
    async def slow(method: str, params: Mapping[str, Any]) -> Any:
        await asyncio.sleep(1.0)
        return "done"

    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, slow, idle_timeout=0.2), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = await ProtocolClient.connect_tcp("127.0.0.1", port)
        try:
            assert await client.call("slow", timeout=20) == "done"
        finally:
            await client.close()


def test_longest_idle_picks_the_idlest_and_never_a_working_connection() -> None:
    idle_old = ConnectionActivity(last_active=0.0)
    idle_new = ConnectionActivity(last_active=1e18)  # just active
    working = ConnectionActivity(last_active=-1.0, in_flight=1)
    assert longest_idle({"a": idle_new, "b": idle_old, "c": working}) == "b"
    assert longest_idle({"c": working, "a": idle_new}) is None


@pytest.fixture
async def echo_enclave(tmp_path: Path) -> Any:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await Transport(CID, tmp_path).start_server(echo, PORT)
    try:
        yield tmp_path
    finally:
        server.close()


async def _roundtrip(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), 20)
    finally:
        writer.close()


async def test_bridge_full_of_idle_clients_still_admits_a_working_one(echo_enclave: Path) -> None:
    """The review's lock-out: every slot held by a client that never sends. The newcomer must get
    in (the longest-idle connection makes room), and idle ones are closed by the idle timeout."""
    bridge = Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, echo_enclave),
                    max_connections=8)
    async with bridge:
        idle = [await asyncio.open_connection("127.0.0.1", bridge.port) for _ in range(8)]
        while bridge.stats.active < 8:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)  # they have now been idle longer than EVICT_AFTER_IDLE
        for i in range(3):
            assert await _roundtrip(bridge.port, b"work %d" % i) == b"work %d" % i
        assert bridge.stats.evicted >= 1 and bridge.stats.refused == 0  # an idle one made room
        for _, w in idle:
            w.close()


async def test_bridge_closes_connections_idle_past_the_timeout(echo_enclave: Path) -> None:
    bridge = Bridge(ListenAddress("127.0.0.1", 0), CID, PORT, Transport(PARENT_CID, echo_enclave),
                    idle_timeout=0.3)
    async with bridge:
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        assert await _read_until_closed(reader) == b""
        writer.close()
        assert await _roundtrip(bridge.port, b"still works") == b"still works"
    assert bridge.stats.idle_closed >= 1


# --- the vsock proxy checks every resolved address of every connection ---------------------------


def _listener(host: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))
    sock.listen(8)
    return sock, sock.getsockname()[1]


def _record_accepts(sock: socket.socket, into: list[str]) -> None:
    def loop() -> None:
        sock.settimeout(10)
        try:
            while True:
                conn, peer = sock.accept()
                into.append(sock.getsockname()[0])
                conn.close()
        except OSError:
            return

    threading.Thread(target=loop, daemon=True).start()


def test_proxy_refuses_a_name_that_now_resolves_outside_the_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: at start-up the remote name resolves to an allowlisted address, later to
    another one. The proxy must not connect there."""
    target, port = _listener()
    # the address the name is rebound to listens too: a proxy that connected there would be seen
    elsewhere, _ = _listener("127.0.0.2", port)
    accepted: list[str] = []
    _record_accepts(target, accepted)
    _record_accepts(elsewhere, accepted)
    answers = {"rebind.test": "127.0.0.1"}
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return real_getaddrinfo(answers[host], *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    transport = Transport(PARENT_CID, tmp_path)
    proxy = VsockProxy(9100, "rebind.test", port, transport=transport,
                       allowlist=[AllowEntry("127.0.0.1", port)])
    with proxy:
        enclave = Transport(CID, tmp_path)
        with enclave.connect(PARENT_CID, 9100) as conn:  # allowed now: relayed
            conn.settimeout(10)
            assert conn.recv(1) == b""
        assert accepted == ["127.0.0.1"]
        answers["rebind.test"] = "127.0.0.2"  # the name now points elsewhere (also loopback here)
        with enclave.connect(PARENT_CID, 9100) as conn:
            conn.settimeout(10)
            assert conn.recv(1) == b""  # closed without connecting
        assert accepted == ["127.0.0.1"]
        assert proxy.permitted("127.0.0.1") and not proxy.permitted("127.0.0.2")
    target.close()
    elsewhere.close()
