"""enclave_app/forwarder.py: TCP loopback -> vsock to the parent, and the Nitro-only helpers
(bringing lo up in a fresh network namespace, mapping the KMS name to 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

from core.channel.vsock import Transport
from enclave_app.forwarder import Forwarder, map_host_to_loopback
from tests.conftest import REPO, is_root, require


def _parent_echo(vdir: Path, port: int, stop: threading.Event) -> threading.Thread:
    parent = Transport(3, vdir)
    listener = parent.listen(port)
    listener.settimeout(0.2)

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, peer = parent.accept(listener)
                except OSError:
                    continue
                with conn:
                    data = b""
                    while chunk := conn.recv(4096):
                        data += chunk
                    conn.sendall(f"cid {peer}: ".encode() + data[::-1])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_forwarder_carries_tcp_to_the_parent(tmp_path: Path) -> None:
    stop = threading.Event()
    thread = _parent_echo(tmp_path, 8000, stop)
    fwd = Forwarder(8000, transport=Transport(17, tmp_path)).start()
    try:
        for payload in (b"abc", os.urandom(100_000)):
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=10) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := sock.recv(65536):
                    got += chunk
            assert got == b"cid 17: " + payload[::-1]
        assert fwd.failures == 0
    finally:
        fwd.stop()
        stop.set()
        thread.join(5)


def test_forwarder_without_a_proxy_closes_the_client(tmp_path: Path) -> None:
    fwd = Forwarder(8999, transport=Transport(17, tmp_path)).start()
    try:
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=10) as sock:
            sock.settimeout(10)
            assert sock.recv(10) == b""
        assert fwd.failures == 1
    finally:
        fwd.stop()


def test_map_host_to_loopback(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost")
    assert map_host_to_loopback("kms.eu-west-1.amazonaws.com", hosts) is True
    assert map_host_to_loopback("kms.eu-west-1.amazonaws.com", hosts) is False
    assert hosts.read_text().splitlines() == ["127.0.0.1 localhost", "127.0.0.1 kms.eu-west-1.amazonaws.com"]


def test_loopback_up_in_a_fresh_network_namespace() -> None:
    """A Nitro enclave boots with lo down; so does a new network namespace."""
    require(is_root() and shutil.which("unshare") is not None, "needs root and unshare(1)")
    script = (
        "import socket\n"
        "from enclave_app.forwarder import loopback_up\n"
        "try:\n"
        "    s = socket.create_server(('127.0.0.1', 0)); socket.create_connection(s.getsockname(), timeout=5)\n"
        "    print('up-before')\n"
        "except OSError:\n"
        "    print('down-before')\n"
        "loopback_up()\n"
        "s = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(s.getsockname(), timeout=5)\n"
        "print('up-after')\n"
    )
    res = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    if res.returncode != 0 and "Operation not permitted" in res.stderr:
        require(False, "network namespaces are not permitted here")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["down-before", "up-after"]
