"""Emulated vsock keeps Nitro's reachability rules: parent <-> enclave, never enclave <-> enclave."""

import asyncio
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channel.vsock import PARENT_CID, Transport


def _echo_server(t: Transport, port: int) -> threading.Thread:
    listener = t.listen(port)

    def run() -> None:
        try:
            conn, peer = t.accept(listener)
        except OSError:
            return
        with conn:
            data = conn.recv(100)
            conn.sendall(data + f"|peer={peer}".encode())
        listener.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_parent_reaches_enclave_and_back(tmp_path: Path) -> None:
    enclave = Transport(own_cid=16, emulated_dir=tmp_path)
    parent = Transport(own_cid=PARENT_CID, emulated_dir=tmp_path)
    th = _echo_server(enclave, 5005)
    with parent.connect(16, 5005) as s:
        s.sendall(b"hi")
        assert s.recv(100) == b"hi|peer=3"
    th.join(2)
    th = _echo_server(parent, 8000)
    with enclave.connect(PARENT_CID, 8000) as s:
        s.sendall(b"up")
        assert s.recv(100) == b"up|peer=16"
    th.join(2)


def test_enclave_to_enclave_refused_at_both_ends(tmp_path: Path) -> None:
    a = Transport(own_cid=16, emulated_dir=tmp_path)
    b = Transport(own_cid=17, emulated_dir=tmp_path)
    _echo_server(b, 5005)
    with pytest.raises(ConnectionRefusedError):
        a.connect(17, 5005)
    # A process that skips the library check is still refused by the listener.
    liar = Transport(own_cid=3, emulated_dir=tmp_path)
    object.__setattr__(liar, "own_cid", 16)
    import socket
    import struct

    from core.channel.unixsock import short_path

    raw = socket.socket(socket.AF_UNIX)
    raw.connect(short_path(b.socket_path(17, 5005)))
    raw.sendall(struct.pack(">I", 16))
    assert raw.recv(1) == b"\x01"
    raw.close()


def test_nothing_listening_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConnectionRefusedError):
        Transport(own_cid=3, emulated_dir=tmp_path).connect(20, 1)


def test_long_home_paths_work(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    enclave = Transport(own_cid=5, emulated_dir=deep)
    parent = Transport(own_cid=3, emulated_dir=deep)
    th = _echo_server(enclave, 1)
    with parent.connect(5, 1) as s:
        s.sendall(b"long")
        assert s.recv(100).startswith(b"long")
    th.join(2)


async def test_asyncio_server_and_client(tmp_path: Path) -> None:
    enclave = Transport(own_cid=9, emulated_dir=tmp_path)
    parent = Transport(own_cid=3, emulated_dir=tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await enclave.start_server(handle, 7000)
    reader, writer = await parent.open_connection(9, 7000)
    writer.write(b"hello\n")
    await writer.drain()
    assert await reader.readline() == b"HELLO\n"
    writer.close()
    other = Transport(own_cid=10, emulated_dir=tmp_path)
    with pytest.raises(ConnectionRefusedError):
        await other.open_connection(9, 7000)
    server.close()
    await server.wait_closed()


def test_a_port_in_use_is_eaddrinuse_and_never_taken_over(tmp_path: Path) -> None:
    """Issue 9 item 6: a second listener silently replaced the first one's socket file."""
    import errno

    parent = Transport(own_cid=PARENT_CID, emulated_dir=tmp_path)
    enclave = Transport(own_cid=16, emulated_dir=tmp_path)
    first = parent.listen(8000)
    with pytest.raises(OSError) as info:
        parent.listen(8000)
    assert info.value.errno == errno.EADDRINUSE
    # the first listener still owns the port
    th = threading.Thread(target=lambda: parent.accept(first)[0].sendall(b"first"), daemon=True)
    th.start()
    with enclave.connect(PARENT_CID, 8000) as s:
        assert s.recv(10) == b"first"
    th.join(2)
    first.close()
    # closing leaves nothing behind, and the port is free again
    assert sorted(p.name for p in (tmp_path / "3").iterdir()) == []
    parent.listen(8000).close()


def test_a_dead_listeners_socket_file_does_not_hold_the_port(tmp_path: Path) -> None:
    import socket

    from core.channel.unixsock import short_path

    parent = Transport(own_cid=PARENT_CID, emulated_dir=tmp_path)
    path = parent.socket_path(PARENT_CID, 8001)
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(short_path(path))
    dead.close()  # a crashed listener: the file stays, nobody listens, no lock is held
    listener = parent.listen(8001)
    listener.close()
    assert not path.exists()


async def test_asyncio_listener_gives_its_port_back(tmp_path: Path) -> None:
    import errno

    enclave = Transport(own_cid=9, emulated_dir=tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await enclave.start_server(handle, 7001)
    with pytest.raises(OSError) as info:
        await enclave.start_server(handle, 7001)
    assert info.value.errno == errno.EADDRINUSE
    server.close()
    await server.wait_closed()
    assert not enclave.socket_path(9, 7001).exists()
    again = await enclave.start_server(handle, 7001)
    again.close()
    await again.wait_closed()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=6000))
def test_fuzz_registry_records_are_read_or_ignored(raw: bytes) -> None:
    """A registry record is the emulator's word on a CID: garbage is ignored (no CID), never a crash."""
    import tempfile

    from core.channel import vsock_peers

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "16"
        folder.mkdir()
        (folder / vsock_peers.REGISTRY_FILE).write_bytes(raw)
        assert vsock_peers.live_enclaves(Path(tmp)) in ({}, {16: vsock_peers._read(folder / vsock_peers.REGISTRY_FILE)})
        assert vsock_peers.cid_of_pid(Path(tmp), os.getpid()) in (None, 16)


def test_registry_names_the_enclave_of_a_process(tmp_path: Path) -> None:
    import subprocess

    from core.channel import vsock_peers

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ident = vsock_peers.identity_for(16, child.pid)
        assert ident.netns is None and ident.pgid == child.pid  # same netns as us: known by process group
        vsock_peers.register(tmp_path, ident)
        assert vsock_peers.cid_of_pid(tmp_path, child.pid) == 16
        assert vsock_peers.cid_of_pid(tmp_path, os.getpid()) is None  # not in it: the parent
    finally:
        child.kill()
        child.wait()
    assert vsock_peers.live_enclaves(tmp_path) == {}  # its init is gone: the record no longer counts
    vsock_peers.unregister(tmp_path, 16)
    assert not (tmp_path / "16").exists()
