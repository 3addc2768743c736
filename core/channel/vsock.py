"""vsock by (cid, port): AF_VSOCK on Nitro; Unix sockets under the emulator.

This kernel has no vsock loopback, so the emulator stands in with filesystem Unix sockets at
``<vsock_dir>/<cid>/<port>.sock`` (they stay reachable from inside an enclave's network namespace).
Nitro's reachability rules hold in both directions of the emulation:

* the parent (CID 3) reaches any enclave by its CID;
* an enclave reaches only the parent;
* enclave-to-enclave connections are refused.

An emulated connection starts with a 4-byte big-endian source CID from the connector and a 1-byte
verdict from the listener (0 accept, 1 refuse), so a refusal is a clean ConnectionRefusedError on
both sides and not a silent hang. After that the stream is raw bytes, as on AF_VSOCK.

The CID in that header is a claim, not an identity: both ends also ask the kernel who the other
process is (SO_PEERCRED) and the emulator's registry which enclave that process belongs to
(core/channel/vsock_peers.py). A process inside an enclave is that enclave's CID whatever it
claims (a wrong claim is refused); a parent-side process may claim only CID 3 or a CID no running
enclave holds (tests stand in for enclaves that way). Ports are owned as on Linux: a listener holds
``<port>.lock`` (flock) for its lifetime, so a second listener on the port gets EADDRINUSE instead
of silently taking it over, and a listener's socket file is removed when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from core.channel import vsock_peers
from core.channel.unixsock import remove_stale, short_path

PARENT_CID = 3
HYPERVISOR_CID = 0
VMADDR_CID_ANY = 0xFFFFFFFF

ENV_VSOCK_DIR = "NITRODECK_VSOCK_DIR"
ENV_OWN_CID = "NITRODECK_ENCLAVE_CID"

_ACCEPT = b"\x00"
_REFUSE = b"\x01"


def _allowed(src_cid: int, dst_cid: int) -> bool:
    if src_cid == dst_cid:
        return False  # Nitro has no vsock loopback either
    return src_cid == PARENT_CID or dst_cid == PARENT_CID


@dataclass(frozen=True)
class Transport:
    """How this process speaks vsock. ``emulated_dir`` None means real AF_VSOCK."""

    own_cid: int = PARENT_CID
    emulated_dir: Path | None = None

    @property
    def emulated(self) -> bool:
        return self.emulated_dir is not None

    def socket_path(self, cid: int, port: int) -> Path:
        assert self.emulated_dir is not None
        return self.emulated_dir / str(cid) / f"{port}.sock"

    # --- blocking API ---------------------------------------------------------------------------

    def connect(self, cid: int, port: int, timeout: float | None = 10.0) -> socket.socket:
        if not self.emulated:
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)  # type: ignore[attr-defined]
            sock.settimeout(timeout)
            try:
                sock.connect((cid, port))
            except BaseException:
                sock.close()
                raise
            sock.settimeout(None)
            return sock
        if not _allowed(self.own_cid, cid):
            raise ConnectionRefusedError(f"vsock: CID {self.own_cid} may not connect to CID {cid}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(short_path(self.socket_path(cid, port)))
        except FileNotFoundError as exc:
            sock.close()
            raise ConnectionRefusedError(f"vsock: nothing listens on {cid}:{port}") from exc
        except BaseException:
            sock.close()
            raise
        try:
            self._check_listener(sock, cid, port)
            sock.sendall(struct.pack(">I", self.own_cid))
            verdict = sock.recv(1)
        except BaseException:
            sock.close()
            raise
        if verdict != _ACCEPT:
            sock.close()
            raise ConnectionRefusedError(f"vsock: {cid}:{port} refused a connection from CID {self.own_cid}")
        sock.settimeout(None)
        return sock

    def listen(self, port: int, cid: int | None = None, backlog: int = 128) -> socket.socket:
        """Listen on our own CID (or ``cid``, e.g. VMADDR_CID_ANY on real vsock)."""
        if not self.emulated:
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)  # type: ignore[attr-defined]
            sock.bind((VMADDR_CID_ANY if cid is None else cid, port))
            sock.listen(backlog)
            return sock
        assert self.emulated_dir is not None
        enclaves = vsock_peers.live_enclaves(self.emulated_dir)
        me = vsock_peers.cid_of_pid(self.emulated_dir, os.getpid(), enclaves)
        if (me is not None and me != self.own_cid) or (me is None and self.own_cid in enclaves):
            # an enclave may listen only on its own CID, and nobody else on a running enclave's
            raise OSError(errno.EADDRNOTAVAIL, f"vsock: cannot listen on CID {self.own_cid} from here")
        path = self.socket_path(self.own_cid, port)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_port(path.with_suffix(".lock"))
        try:
            remove_stale(path)  # we own the port: a socket file still there is a dead listener's
            sock = _Listener(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(short_path(path))
            sock.listen(backlog)
        except BaseException:
            _release_port(path.with_suffix(".lock"), lock_fd)
            raise
        sock.own(path, lock_fd)
        return sock

    def _check_listener(self, sock: socket.socket, cid: int, port: int) -> None:
        """The process that listens must be CID ``cid`` (an enclave cannot pose as the parent or another)."""
        assert self.emulated_dir is not None
        enclaves = vsock_peers.live_enclaves(self.emulated_dir)
        if not enclaves:
            return
        actual = vsock_peers.cid_of_pid(self.emulated_dir, vsock_peers.peer_pid(sock), enclaves)
        if actual is None and cid not in enclaves:
            return  # a parent-side listener on the parent's (or an unused) CID
        if actual != cid:
            raise ConnectionRefusedError(f"vsock: what listens on {cid}:{port} is not CID {cid}")

    def _peer_cid(self, sock: socket.socket, claimed: int) -> int | None:
        """The peer's CID as the emulator knows it; None when its claim is false (refuse)."""
        assert self.emulated_dir is not None
        enclaves = vsock_peers.live_enclaves(self.emulated_dir)
        if not enclaves:
            return claimed
        actual = vsock_peers.cid_of_pid(self.emulated_dir, vsock_peers.peer_pid(sock), enclaves)
        if actual is not None:
            return actual if claimed == actual else None
        return claimed if claimed == PARENT_CID or claimed not in enclaves else None

    def accept(self, listener: socket.socket, timeout: float = 10.0) -> tuple[socket.socket, int]:
        """Accept one connection; returns (socket, peer CID). Refused peers are closed and skipped."""
        while True:
            conn, addr = listener.accept()
            if not self.emulated:
                return conn, int(addr[0])
            conn.settimeout(timeout)
            try:
                head = _recv_exact(conn, 4)
                src = self._peer_cid(conn, struct.unpack(">I", head)[0])
                if src is None or not _allowed(src, self.own_cid):
                    conn.sendall(_REFUSE)
                    conn.close()
                    continue
                conn.sendall(_ACCEPT)
            except OSError:
                conn.close()
                continue
            conn.settimeout(None)
            return conn, src

    # --- asyncio API ----------------------------------------------------------------------------

    async def open_connection(
        self, cid: int, port: int, timeout: float = 10.0, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        sock = await asyncio.wait_for(loop.run_in_executor(None, self.connect, cid, port, timeout), timeout)
        sock.setblocking(False)
        return await asyncio.open_connection(sock=sock, limit=limit)

    async def start_server(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        port: int,
        limit: int = 2**16,
    ) -> asyncio.base_events.Server:
        sock = self.listen(port)
        sock.setblocking(False)
        if not self.emulated:
            return await asyncio.start_server(handler, sock=sock, limit=limit)

        own = self.own_cid

        async def gate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readexactly(4), 10)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                writer.close()
                return
            raw = writer.get_extra_info("socket")
            src = self._peer_cid(raw, struct.unpack(">I", head)[0]) if raw is not None else None
            if src is None or not _allowed(src, own):
                writer.write(_REFUSE)
                writer.close()
                return
            writer.write(_ACCEPT)
            await handler(reader, writer)

        return await asyncio.start_server(gate, sock=sock, limit=limit)


class _Listener(socket.socket):
    """An emulated vsock listener: owns its port's lock and socket file, and gives both up on close."""

    __slots__ = ("_vs_path", "_vs_lock", "_vs_ino")

    def own(self, path: Path, lock_fd: int) -> None:
        self._vs_path = path
        self._vs_lock = lock_fd
        try:
            self._vs_ino = os.stat(path).st_ino
        except OSError:
            self._vs_ino = 0

    def close(self) -> None:
        lock_fd = getattr(self, "_vs_lock", -1)
        if lock_fd >= 0:
            self._vs_lock = -1
            path: Path = self._vs_path
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == self._vs_ino:
                    path.unlink()  # ours still: no stale socket file stays behind
            _release_port(path.with_suffix(".lock"), lock_fd)
        super().close()


def _take_port(lock_path: Path) -> int:
    """flock the port's lock file for the listener's lifetime; EADDRINUSE when someone holds it."""
    for _ in range(5):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
        except BaseException:
            os.close(fd)
            raise
        # the previous owner may have unlinked the file between our open and our lock: retry
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def _release_port(lock_path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        lock_path.unlink()  # unlinked while still locked, so nobody can take the old inode
    with contextlib.suppress(OSError):
        os.close(fd)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("vsock: peer closed during handshake")
        buf += chunk
    return buf


def from_env() -> Transport:
    """Inside an (emulated) enclave: the supervisor sets NITRODECK_VSOCK_DIR and our CID."""
    vdir = os.environ.get(ENV_VSOCK_DIR)
    if not vdir:
        return Transport()
    return Transport(own_cid=int(os.environ.get(ENV_OWN_CID, PARENT_CID)), emulated_dir=Path(vdir))


def parent_transport(emulated_dir: Path | None) -> Transport:
    """The parent's side: real AF_VSOCK, or the emulator's vsock folder."""
    return Transport(own_cid=PARENT_CID, emulated_dir=emulated_dir)
