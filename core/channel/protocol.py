"""The parent-enclave protocol: length-prefixed CBOR frames carrying versioned requests and responses.

A frame is a 4-byte big-endian length followed by that many bytes of CBOR (at most ``MAX_FRAME``).
Messages (docs/protocol.md has the full contract)::

    request   {"v": 1, "id": int, "method": str, "params": map}
    response  {"v": 1, "id": int, "result": any}
    error     {"v": 1, "id": int | null, "error": {"code": str, "message": str}}

Requests on one connection may be in flight concurrently; responses carry the request's ``id`` and
may come back in any order. A frame we cannot parse (bad CBOR, wrong shape, too large, cut short)
makes the server send an error frame and close *that* connection: after a framing error the byte
stream cannot be trusted to be back on a frame boundary. Every other connection is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from core.errors import InputTooLarge, NitrodeckError

VERSION = 1
MAX_FRAME = 1024 * 1024
HEADER = struct.Struct(">I")
#: how deep params/results may nest; real messages are two or three levels deep
MAX_DEPTH = 16
#: a peer that sent a frame header has this long to send the body (slow-loris bound)
BODY_TIMEOUT = 30.0
#: requests one connection may have running at once on the server
MAX_IN_FLIGHT = 64
#: a server connection with no request running closes after this long without a new frame header,
#: so idle clients cannot hold connection slots forever
IDLE_TIMEOUT = 60.0
#: a response must be taken by the peer within this long (a client that never reads cannot pin us)
WRITE_TIMEOUT = 30.0

# Wire error codes (the "code" of an error frame).
BAD_FRAME = "bad-frame"
TOO_LARGE = "too-large"
TRUNCATED = "truncated"
BAD_VERSION = "bad-version"
BAD_REQUEST = "bad-request"
UNKNOWN_METHOD = "unknown-method"
BAD_PARAMS = "bad-params"
INTERNAL = "internal"
BUSY = "busy"


class ProtocolError(NitrodeckError):
    """A protocol-level failure. ``wire_code`` is what goes into an error frame."""

    code = "ND-PROTOCOL"

    def __init__(
        self, message: str, *, wire_code: str = BAD_FRAME, hint: str | None = None, where: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, where=where or "protocol")
        self.wire_code = wire_code


class ProtocolTimeout(ProtocolError):
    code = "ND-PROTOCOL-TIMEOUT"


class ConnectionClosed(ProtocolError):
    """The peer went away (or never answered) while a call was pending."""

    code = "ND-PROTOCOL-CLOSED"


class RemoteError(ProtocolError):
    """The peer answered with an error frame; ``remote_code`` is its wire code."""

    code = "ND-REMOTE"

    def __init__(self, remote_code: str, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{remote_code}: {message}", wire_code=remote_code, where=where or "enclave")
        self.remote_code = remote_code
        self.remote_message = message


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"v": VERSION, "id": self.id, "method": self.method, "params": dict(self.params)}


@dataclass(frozen=True)
class Response:
    id: int | None
    result: Any = None
    error_code: str | None = None
    error_message: str = ""

    @property
    def is_error(self) -> bool:
        return self.error_code is not None

    def to_wire(self) -> dict[str, Any]:
        if self.error_code is not None:
            return {
                "v": VERSION,
                "id": self.id,
                "error": {"code": self.error_code, "message": self.error_message},
            }
        return {"v": VERSION, "id": self.id, "result": self.result}


Message = Request | Response


def encode_frame(message: Mapping[str, Any], max_frame: int = MAX_FRAME) -> bytes:
    body = cbor2.dumps(dict(message))
    if len(body) > max_frame:
        raise ProtocolError(
            f"frame of {len(body)} bytes exceeds the {max_frame}-byte limit", wire_code=TOO_LARGE
        )
    return HEADER.pack(len(body)) + body


def _check_value(value: Any, depth: int = 0) -> None:
    """Only plain CBOR data may cross: cbor2 turns some tags into datetimes, decimals, sets..."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"message nests deeper than {MAX_DEPTH} levels", wire_code=BAD_FRAME)
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise ProtocolError("map keys must be text or integers", wire_code=BAD_FRAME)
            _check_value(v, depth + 1)
        return
    if isinstance(value, Sequence):
        for v in value:
            _check_value(v, depth + 1)
        return
    raise ProtocolError(f"unsupported CBOR value of type {type(value).__name__}", wire_code=BAD_FRAME)


def _frame_id(obj: Mapping[str, Any]) -> int | None:
    raw = obj.get("id")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def decode_body(body: bytes, max_frame: int = MAX_FRAME) -> Message:
    """Parse one frame body (without its length header) into a Request or Response."""
    if len(body) > max_frame:
        raise ProtocolError(
            f"frame of {len(body)} bytes exceeds the {max_frame}-byte limit", wire_code=TOO_LARGE
        )
    stream = io.BytesIO(body)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise ProtocolError(f"frame is not valid CBOR ({type(exc).__name__})", wire_code=BAD_FRAME) from exc
    if stream.tell() != len(body):
        raise ProtocolError(f"{len(body) - stream.tell()} bytes of trailing data after the CBOR item")
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"a message must be a CBOR map, got {type(obj).__name__}")
    _check_value(obj)
    ident = _frame_id(obj)
    version = obj.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("message has no integer version 'v'", wire_code=BAD_REQUEST)
    if version != VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version} (this side speaks {VERSION})", wire_code=BAD_VERSION
        )
    if "id" in obj and obj["id"] is not None and ident is None:
        raise ProtocolError("'id' must be an integer", wire_code=BAD_REQUEST)
    if "method" in obj:
        method = obj["method"]
        params = obj.get("params", {})
        if ident is None:
            raise ProtocolError("request has no integer 'id'", wire_code=BAD_REQUEST)
        if not isinstance(method, str) or not method or len(method) > 64:
            raise ProtocolError("'method' must be a text string of 1..64 characters", wire_code=BAD_REQUEST)
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ProtocolError("'params' must be a map", wire_code=BAD_REQUEST)
        return Request(ident, method, params)
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, Mapping) or not isinstance(err.get("code"), str):
            raise ProtocolError("'error' must be a map with a text 'code'", wire_code=BAD_REQUEST)
        message = err.get("message")
        return Response(ident, error_code=err["code"][:64], error_message=str(message or "")[:1024])
    if "result" in obj:
        if ident is None:
            raise ProtocolError("response has no integer 'id'", wire_code=BAD_REQUEST)
        return Response(ident, result=obj["result"])
    raise ProtocolError("message is neither a request, a response nor an error", wire_code=BAD_REQUEST)


class IdleTimeout(ProtocolError):
    """No frame began within the idle timeout: the connection is closed quietly."""


async def read_frame(
    reader: asyncio.StreamReader,
    max_frame: int = MAX_FRAME,
    body_timeout: float = BODY_TIMEOUT,
    header_timeout: float | None = None,
) -> bytes | None:
    """One frame body; None on a clean end of stream between frames.

    ``header_timeout`` bounds the wait for the 4-byte header (None: wait for ever, as clients do).
    """
    try:
        head = await asyncio.wait_for(reader.readexactly(HEADER.size), header_timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header", wire_code=TRUNCATED) from exc
    except TimeoutError as exc:
        raise IdleTimeout(f"no request within {header_timeout:g}s", wire_code=TRUNCATED) from exc
    (length,) = HEADER.unpack(head)
    if length > max_frame:
        raise ProtocolError(
            f"frame of {length} bytes exceeds the {max_frame}-byte limit", wire_code=TOO_LARGE
        )
    try:
        return await asyncio.wait_for(reader.readexactly(length), body_timeout)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(
            f"connection closed after {len(exc.partial)} of {length} frame bytes", wire_code=TRUNCATED
        ) from exc
    except TimeoutError as exc:
        raise ProtocolError(f"frame body not received within {body_timeout:g}s", wire_code=TRUNCATED) from exc


# --- server -------------------------------------------------------------------------------------


@dataclass
class ConnectionActivity:
    """What a server knows about one connection: when it last did something, and whether a request
    of it is running (a connection with one running is working, never idle)."""

    last_active: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def idle_for(self, now: float | None = None) -> float:
        return 0.0 if self.in_flight else (now or time.monotonic()) - self.last_active


#: a connection must have been idle this long before a full server closes it for a newcomer
EVICT_AFTER_IDLE = 1.0


def longest_idle(
    connections: Mapping[Any, ConnectionActivity], min_idle: float = EVICT_AFTER_IDLE
) -> Any | None:
    """Fair admission: the key of the connection idle longest (at least ``min_idle``), or None when
    every connection is working. A full server closes that one instead of refusing the newcomer."""
    now = time.monotonic()
    best, best_idle = None, min_idle
    for key, activity in connections.items():
        idle = activity.idle_for(now)
        if idle >= best_idle:
            best, best_idle = key, idle
    return best


Dispatch = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


def error_for(exc: BaseException) -> tuple[str, str]:
    """(wire code, message) for an exception raised by a handler. Unknown failures say little."""
    if isinstance(exc, ProtocolError):
        return exc.wire_code, exc.message
    if isinstance(exc, InputTooLarge):
        return TOO_LARGE, exc.message
    if isinstance(exc, NitrodeckError):
        return exc.code, exc.message
    # Never echo arbitrary exception text: it may carry data the handler was working on.
    return INTERNAL, f"internal error ({type(exc).__name__})"


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    dispatch: Dispatch,
    *,
    max_frame: int = MAX_FRAME,
    max_in_flight: int = MAX_IN_FLIGHT,
    on_error: Callable[[ProtocolError], None] | None = None,
    body_timeout: float = BODY_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    activity: ConnectionActivity | None = None,
) -> None:
    """Serve one connection until the peer closes it, sends a frame we cannot trust, stays idle
    (no request running and no new frame) for ``idle_timeout``, or does not take a response
    within ``write_timeout``.

    Requests run concurrently (bounded by ``max_in_flight``); responses are written whole, one
    frame per ``write`` call, so they never interleave. ``activity`` (if given) is kept up to date
    so a server can pick the longest-idle connection to close when it is full (fair admission).
    """
    activity = activity or ConnectionActivity()
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    write_lock = asyncio.Lock()

    async def send(response: Response) -> None:
        try:
            frame = encode_frame(response.to_wire(), max_frame)
        except ProtocolError as exc:
            frame = encode_frame(
                Response(response.id, error_code=exc.wire_code, error_message=exc.message).to_wire()
            )
        except (TypeError, ValueError, cbor2.CBORError):
            frame = encode_frame(
                Response(response.id, error_code=INTERNAL, error_message="result is not encodable").to_wire()
            )
        async with write_lock:
            writer.write(frame)
            try:
                await asyncio.wait_for(writer.drain(), write_timeout)
            except TimeoutError:
                # the peer does not read: drop it rather than let it hold a slot and our buffers
                writer.transport.abort()
                raise ConnectionError("peer did not take the response in time") from None

    async def run(request: Request) -> None:
        activity.in_flight += 1
        try:
            try:
                result = await dispatch(request.method, request.params)
                response = Response(request.id, result=result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every handler failure becomes an error frame
                code, message = error_for(exc)
                response = Response(request.id, error_code=code, error_message=message)
            with contextlib.suppress(ConnectionError, OSError):
                await send(response)
        finally:
            activity.in_flight -= 1
            activity.touch()
            slots.release()

    try:
        while True:
            try:
                body = await read_frame(reader, max_frame, body_timeout, idle_timeout)
                if body is None:
                    break
                activity.touch()
                message = decode_body(body, max_frame)
            except IdleTimeout:
                if tasks:
                    continue  # idle only counts while nothing runs: a long request keeps its connection
                break
            except ProtocolError as exc:
                if on_error:
                    on_error(exc)
                if exc.wire_code == BAD_VERSION:
                    # A well-formed frame from a newer peer: answer and keep the connection.
                    ident = _peek_id(body)
                    with contextlib.suppress(ConnectionError, OSError):
                        await send(Response(ident, error_code=exc.wire_code, error_message=exc.message))
                    continue
                with contextlib.suppress(ConnectionError, OSError):
                    await send(Response(None, error_code=exc.wire_code, error_message=exc.message))
                break
            if not isinstance(message, Request):
                err = ProtocolError("the server accepts requests only", wire_code=BAD_REQUEST)
                with contextlib.suppress(ConnectionError, OSError):
                    await send(Response(message.id, error_code=err.wire_code, error_message=err.message))
                break
            await slots.acquire()
            task = asyncio.create_task(run(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    except (ConnectionError, OSError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _peek_id(body: bytes | None) -> int | None:
    if not body:
        return None
    try:
        obj = cbor2.loads(body)
    except Exception:  # noqa: BLE001 - only a best-effort id for the error frame
        return None
    return _frame_id(obj) if isinstance(obj, Mapping) else None


# --- asyncio client -----------------------------------------------------------------------------


class ProtocolClient:
    """Many concurrent calls over one connection; responses are matched to calls by id."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_frame: int = MAX_FRAME
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_frame = max_frame
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._closed: ProtocolError | None = None
        self._reader_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect_tcp(cls, host: str, port: int, timeout: float = 10.0) -> ProtocolClient:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_FRAME + HEADER.size), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed(f"cannot connect to {host}:{port}: {exc}", where="tcp") from exc
        return cls(reader, writer)

    @classmethod
    async def connect_vsock(
        cls, transport: Any, cid: int, port: int, timeout: float = 10.0
    ) -> ProtocolClient:
        """``transport`` is a core.channel.vsock.Transport (real AF_VSOCK or the emulator's folder)."""
        try:
            reader, writer = await transport.open_connection(cid, port, timeout=timeout, limit=MAX_FRAME + 4)
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed(
                f"cannot connect to vsock {cid}:{port}: {exc or type(exc).__name__}",
                where="vsock",
                hint="is the enclave running, and does its payload listen on that port?",
            ) from exc
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def _read_loop(self) -> None:
        reason: ProtocolError = ConnectionClosed("the peer closed the connection")
        try:
            while True:
                body = await read_frame(self._reader, self._max_frame)
                if body is None:
                    break
                message = decode_body(body, self._max_frame)
                if not isinstance(message, Response):
                    raise ProtocolError("peer sent a request to a client", wire_code=BAD_REQUEST)
                if message.id is None:
                    # A connection-level error: the server is about to close on us.
                    if message.error_code:
                        reason = RemoteError(message.error_code, message.error_message)
                    continue
                future = self._pending.pop(message.id, None)
                if future is None or future.done():
                    continue  # a late answer to a call that already timed out
                if message.error_code is not None:
                    future.set_exception(RemoteError(message.error_code, message.error_message))
                else:
                    future.set_result(message.result)
        except ProtocolError as exc:
            reason = exc
        except (ConnectionError, OSError) as exc:
            reason = ConnectionClosed(f"connection lost: {exc}")
        except asyncio.CancelledError:
            reason = ConnectionClosed("client closed")
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: ProtocolError) -> None:
        if self._closed is None:
            self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()

    async def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Any:
        if self._closed is not None:
            raise ConnectionClosed(f"connection is closed ({self._closed.message})")
        ident = next(self._ids)
        frame = encode_frame(Request(ident, method, params or {}).to_wire(), self._max_frame)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._writer.write(frame)
            await asyncio.wait_for(self._writer.drain(), timeout)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            raise ProtocolTimeout(f"no answer to {method!r} within {timeout:g}s") from exc
        except (ConnectionError, OSError) as exc:
            # The server may have said why before closing (e.g. `busy`): prefer its reason.
            await asyncio.wait({self._reader_task}, timeout=1.0)
            if isinstance(self._closed, RemoteError):
                raise RemoteError(self._closed.remote_code, self._closed.remote_message) from exc
            raise ConnectionClosed(f"connection lost while calling {method!r}: {exc}") from exc
        finally:
            self._pending.pop(ident, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark retrieved: an unawaited failure is not worth a warning

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def __aenter__(self) -> ProtocolClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- blocking client ----------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolTimeout("no complete answer before the deadline")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(n - len(chunks), 1 << 16))
        except TimeoutError as exc:
            raise ProtocolTimeout("no complete answer before the deadline") from exc
        if not chunk:
            raise ConnectionClosed("the peer closed the connection")
        chunks += chunk
    return bytes(chunks)


class BlockingClient:
    """One call at a time over a connected socket (for scripts and threads without an event loop)."""

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME) -> None:
        self._sock = sock
        self._max_frame = max_frame
        self._ids = itertools.count(1)

    def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        ident = next(self._ids)
        frame = encode_frame(Request(ident, method, params or {}).to_wire(), self._max_frame)
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(frame)
            while True:
                (length,) = HEADER.unpack(_recv_exact(self._sock, HEADER.size, deadline))
                if length > self._max_frame:
                    raise ProtocolError(f"answer of {length} bytes exceeds the limit", wire_code=TOO_LARGE)
                message = decode_body(_recv_exact(self._sock, length, deadline), self._max_frame)
                if not isinstance(message, Response):
                    raise ProtocolError("peer sent a request to a client", wire_code=BAD_REQUEST)
                if message.id is None and message.error_code:
                    raise RemoteError(message.error_code, message.error_message)
                if message.id != ident:
                    continue  # an answer to an earlier call that timed out
                if message.error_code is not None:
                    raise RemoteError(message.error_code, message.error_message)
                return message.result
        except TimeoutError as exc:
            raise ProtocolTimeout(f"no answer to {method!r} within {timeout:g}s") from exc
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection lost while calling {method!r}: {exc}") from exc

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sign_binding(public_key: bytes, payload: bytes, nonce: bytes) -> bytes:
    """The attestation user_data of a ``sign`` answer: sha256(public_key_DER || sha256(payload) || nonce).

    It ties the key that signed, the exact payload and the caller's nonce to one attestation.
    """
    return hashlib.sha256(public_key + hashlib.sha256(payload).digest() + nonce).digest()


def require_bytes(
    params: Mapping[str, Any], name: str, *, max_len: int, optional: bool = False
) -> bytes | None:
    """A bytes parameter with a size limit (handler helper)."""
    value = params.get(name)
    if value is None:
        if optional:
            return None
        raise ProtocolError(f"parameter {name!r} is required", wire_code=BAD_PARAMS)
    if not isinstance(value, bytes | bytearray):
        raise ProtocolError(f"parameter {name!r} must be a byte string", wire_code=BAD_PARAMS)
    if len(value) > max_len:
        raise ProtocolError(
            f"parameter {name!r} is {len(value)} bytes; the limit is {max_len}", wire_code=TOO_LARGE
        )
    return bytes(value)


def require_str(
    params: Mapping[str, Any], name: str, *, choices: Sequence[str], default: str | None = None
) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise ProtocolError(f"parameter {name!r} must be one of {', '.join(choices)}", wire_code=BAD_PARAMS)
    return value
