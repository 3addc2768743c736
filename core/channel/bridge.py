"""TCP <-> vsock bridge: the socat sidecar of the ECS layout (``tcp-listen:8888,fork vsock-connect:CID:5005``).

Each TCP connection gets its own vsock connection to the enclave; bytes are copied both ways with
bounded reads and ``drain()`` after every write, so a slow side slows the other instead of growing a
buffer. When one side finishes sending, the other side gets EOF (half-close) and the opposite
direction keeps flowing until it finishes too. Stopping closes the listener first, then gives
in-flight connections a deadline to finish before they are cut.

The listener is loopback-only unless explicitly allowed: the enclave's API has no authentication
of its own, so exposing it on a public interface must be a deliberate choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from core.channel.protocol import ConnectionActivity, IdleTimeout, longest_idle
from core.channel.vsock import Transport
from core.errors import NitrodeckError, UsageError

CHUNK = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_STOP_DEADLINE = 5.0
CONNECT_TIMEOUT = 10.0
#: a connection that moves no byte either way for this long is closed (idle clients must not hold
#: slots, here or in the enclave, for ever)
IDLE_TIMEOUT = 120.0


class BridgeError(NitrodeckError):
    code = "ND-BRIDGE"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, where: str = "--listen") -> ListenAddress:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 means "any free port"."""
    text = text.strip()
    if len(text) > 300:
        raise UsageError("address is too long", where=where)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"cannot parse {text!r}", where=where, hint="use HOST:PORT or [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise UsageError(f"cannot parse {text!r}", where=where, hint="use HOST:PORT, e.g. 127.0.0.1:8888")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"port {port_text[:10]!r} is not 0..65535", where=where)
    return ListenAddress(host, int(port_text))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    activity: ConnectionActivity | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Copy until EOF, then half-close the writing side. Returns the byte count.

    With ``activity``/``idle_timeout``: the connection ends (IdleTimeout) once neither direction
    moved a byte for ``idle_timeout`` seconds; a write the other side does not take within it too.
    """
    activity = activity or ConnectionActivity()
    total = 0
    while True:
        if idle_timeout is None:
            data = await reader.read(CHUNK)
        else:
            left = idle_timeout - activity.idle_for()
            if left <= 0:
                raise IdleTimeout(f"no bytes either way for {idle_timeout:g}s")
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), left)
            except TimeoutError:
                continue  # the other direction may have moved meanwhile: re-check the shared clock
        if not data:
            break
        activity.touch()
        writer.write(data)
        await asyncio.wait_for(writer.drain(), idle_timeout)
        activity.touch()
        total += len(data)
    if writer.can_write_eof() and not writer.is_closing():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
    return total


@dataclass
class BridgeStats:
    accepted: int = 0
    refused: int = 0
    failed_upstream: int = 0
    active: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    evicted: int = 0  # idle connections closed to admit a new one
    idle_closed: int = 0  # connections closed by the idle timeout


class Bridge:
    """An in-process TCP -> vsock bridge. ``await start()``, read ``.port``, ``await stop()``."""

    def __init__(
        self,
        listen: ListenAddress,
        cid: int,
        port: int,
        transport: Transport,
        *,
        allow_non_loopback: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        log: Callable[[str], None] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if not is_loopback(listen.host) and not allow_non_loopback:
            raise UsageError(
                f"refusing to listen on non-loopback address {listen.host}",
                where="bridge --listen",
                hint="the enclave API has no authentication; pass --allow-non-loopback if you really mean it",
            )
        self.listen = listen
        self.cid = cid
        self.vsock_port = port
        self.transport = transport
        self.stats = BridgeStats()
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: live connections and when each last moved a byte (fair admission picks the idlest)
        self._active: dict[asyncio.Task[None], ConnectionActivity] = {}
        self._log = log or (lambda _msg: None)

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise BridgeError("the bridge is not listening", where="bridge")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, self.listen.host, self.listen.port, limit=CHUNK, reuse_address=True
            )
        except OSError as exc:
            raise BridgeError(
                f"cannot listen on {self.listen}: {exc.strerror or exc}", where="bridge"
            ) from exc
        self._log(f"bridge listening on {self.listen.host}:{self.port} -> vsock {self.cid}:{self.vsock_port}")

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._active) >= self.max_connections:
            # fair admission: close the connection idle longest (if any is) instead of the newcomer
            victim = longest_idle(self._active)
            if victim is None:
                self.stats.refused += 1
                client_writer.close()
                return
            self._active.pop(victim, None)
            victim.cancel()
            self.stats.evicted += 1
        activity = ConnectionActivity()
        self._active[task] = activity
        self._tasks.add(task)
        self.stats.accepted += 1
        self.stats.active += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await self.transport.open_connection(
                    self.cid, self.vsock_port, timeout=CONNECT_TIMEOUT, limit=CHUNK
                )
            except (OSError, TimeoutError) as exc:
                self.stats.failed_upstream += 1
                self._log(
                    f"bridge: vsock {self.cid}:{self.vsock_port} unreachable: {exc or type(exc).__name__}"
                )
                return
            _set_nodelay(client_writer)
            up, down = await asyncio.gather(
                _pump(client_reader, upstream, activity, self.idle_timeout),
                _pump(up_reader, client_writer, activity, self.idle_timeout),
                return_exceptions=True,
            )
            if any(isinstance(r, IdleTimeout | TimeoutError) for r in (up, down)):
                self.stats.idle_closed += 1
            self.stats.bytes_up += up if isinstance(up, int) else 0
            self.stats.bytes_down += down if isinstance(down, int) else 0
        finally:
            self.stats.active -= 1
            self._active.pop(task, None)
            for w in (client_writer, upstream):
                if w is not None:
                    w.close()
            for w in (client_writer, upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 1)
            self._tasks.discard(task)

    async def stop(self, deadline: float = DEFAULT_STOP_DEADLINE) -> int:
        """Stop accepting, let in-flight connections finish within ``deadline``; returns how many were cut."""
        if self._server is not None:
            self._server.close()
        pending = list(self._tasks)
        cut = 0
        if pending:
            _, still = await asyncio.wait(pending, timeout=deadline)
            for task in still:
                task.cancel()
            cut = len(still)
            if still:
                await asyncio.wait(still, timeout=2)
        self._log(f"bridge stopped ({cut} connection(s) cut at the deadline)")
        return cut

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    # request/response traffic: Nagle would add 40 ms to every small answer
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def run_until_signalled(bridge: Bridge, deadline: float = DEFAULT_STOP_DEADLINE) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly. Returns the number of connections cut."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.start()
        await stop.wait()
        return await bridge.stop(deadline)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
