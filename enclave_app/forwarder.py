"""Inside the enclave: TCP 127.0.0.1:<port> -> vsock (parent CID 3, the vsock-proxy's port).

An enclave has no network, only vsock to its parent (under the emulator: a network namespace with
loopback only). HTTP clients such as boto3 speak TCP, so this listener gives them a local endpoint
and carries each connection over vsock to the parent's vsock-proxy, which relays it to KMS.
It listens on loopback only and serves a bounded number of connections at once.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import threading
from pathlib import Path

from core.channel.proxy import relay
from core.channel.vsock import PARENT_CID, Transport, from_env

MAX_CONNECTIONS = 16
_POLL = 0.25
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
HOSTS = Path("/etc/hosts")


def loopback_up() -> bool:
    """Bring ``lo`` up (a real enclave boots with it down; the kernel then adds 127.0.0.1/8).

    Returns True when lo is up afterwards. Under the emulator it already is.
    """
    ifreq = struct.pack("16sH22x", b"lo", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
        if flags & _IFF_UP:
            return True
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    return True


def map_host_to_loopback(hostname: str, hosts: Path = HOSTS) -> bool:
    """Make ``hostname`` resolve to 127.0.0.1 inside the enclave, so TLS to KMS through the
    forwarder verifies the real name. Adds one line to /etc/hosts if the name is not there yet."""
    try:
        current = hosts.read_text()[:1_000_000] if hosts.exists() else ""
    except OSError:
        current = ""
    if any(hostname in line.split()[1:] for line in current.splitlines() if not line.startswith("#")):
        return False
    with open(hosts, "a") as fh:
        fh.write(("" if current.endswith("\n") or not current else "\n") + f"127.0.0.1 {hostname}\n")
    return True


class Forwarder:
    """``start()`` binds 127.0.0.1:``local_port`` (0 = any free port; see ``port``)."""

    def __init__(self, proxy_port: int, *, local_port: int = 0, transport: Transport | None = None) -> None:
        self.proxy_port = proxy_port
        self.transport = transport or from_env()
        self._local_port = local_port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None
        self.failures = 0

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Forwarder:
        self._listener = socket.create_server(("127.0.0.1", self._local_port))
        self._listener.settimeout(_POLL)
        self._thread = threading.Thread(
            target=self._loop, name=f"kms-forwarder-{self.proxy_port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()

    def _loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=_POLL):
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                self._slots.release()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            try:
                upstream = self.transport.connect(PARENT_CID, self.proxy_port, timeout=10)
            except OSError:
                # the parent's vsock-proxy is not running: the HTTP client sees a closed connection
                self.failures += 1
                return
            try:
                relay(conn, upstream, self._stop)
            finally:
                upstream.close()
        finally:
            conn.close()
            self._slots.release()
