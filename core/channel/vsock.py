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
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

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
        path = self.socket_path(self.own_cid, port)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(short_path(path))
        sock.listen(backlog)
        return sock

    def accept(self, listener: socket.socket, timeout: float = 10.0) -> tuple[socket.socket, int]:
        """Accept one connection; returns (socket, peer CID). Refused peers are closed and skipped."""
        while True:
            conn, addr = listener.accept()
            if not self.emulated:
                return conn, int(addr[0])
            conn.settimeout(timeout)
            try:
                head = _recv_exact(conn, 4)
                src = struct.unpack(">I", head)[0]
                if not _allowed(src, self.own_cid):
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
            src = struct.unpack(">I", head)[0]
            if not _allowed(src, own):
                writer.write(_REFUSE)
                writer.close()
                return
            writer.write(_ACCEPT)
            await handler(reader, writer)

        return await asyncio.start_server(gate, sock=sock, limit=limit)


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
