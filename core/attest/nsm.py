"""NSM client: talk to the Nitro Security Module from inside an enclave.

Messages are the NSM API's CBOR (serde's externally tagged enums): unit variants are bare strings
(``"DescribeNSM"``), struct variants 1-entry maps (``{"DescribePCR": {"index": 3}}``). Two
transports carry the same bytes: the real ``/dev/nsm`` ioctl, and under the emulator the enclave's
NSM Unix socket named by ``$NITRODECK_NSM_SOCKET`` (4-byte big-endian length + CBOR, both ways).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cbor2

from core.channel.unixsock import short_path
from core.errors import NitrodeckError

DEVICE = Path("/dev/nsm")
ENV_SOCKET = "NITRODECK_NSM_SOCKET"
NSM_IOCTL_RAW = 0xC0200A00  # _IOWR(0x0A, 0, struct nsm_raw)
MAX_REQUEST = 0x1000
MAX_RESPONSE = 0x3000
MAX_FIELD = 1024
MAX_RANDOM_CALLS = 64  # get_random(n) collects at most this many device answers
SOCKET_TIMEOUT = 30.0
ERROR_CODES = (
    "Success",
    "InvalidArgument",
    "InvalidIndex",
    "InvalidResponse",
    "ReadOnlyIndex",
    "InvalidOperation",
    "BufferTooSmall",
    "InputTooLarge",
    "InternalError",
)


class NsmError(NitrodeckError):
    """The NSM answered ``{"Error": code}``; ``nsm_code`` is the NSM's own name for it."""

    code = "ND-NSM"

    def __init__(self, nsm_code: str, message: str | None = None, *, where: str | None = "nsm") -> None:
        super().__init__(message or f"NSM refused the request: {nsm_code}", where=where)
        self.nsm_code = nsm_code


class NsmTransportError(NitrodeckError):
    """No NSM could be reached, or it broke the protocol."""

    code = "ND-NSM-TRANSPORT"


# --- response dataclasses -------------------------------------------------------------------------


@dataclass(frozen=True)
class PcrDescription:
    lock: bool
    data: bytes


@dataclass(frozen=True)
class NsmDescription:
    version_major: int
    version_minor: int
    version_patch: int
    module_id: str
    max_pcrs: int
    locked_pcrs: list[int]
    digest: str


# --- request encoding -----------------------------------------------------------------------------


def _check_field(name: str, value: bytes | None) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise NsmError("InvalidArgument", f"{name} must be bytes", where=f"nsm.{name}")
    value = bytes(value)
    if len(value) > MAX_FIELD:
        raise NsmError("InvalidArgument", f"{name} is {len(value)} bytes; the NSM takes at most {MAX_FIELD}",
                       where=f"nsm.{name}")
    return value


def encode_request(message: Any) -> bytes:
    """CBOR of one request; refuses what the driver would refuse (more than 0x1000 bytes)."""
    data = cbor2.dumps(message)
    if len(data) > MAX_REQUEST:
        raise NsmError("InputTooLarge", f"request is {len(data)} bytes; the NSM takes at most {MAX_REQUEST}")
    return data


# --- response decoding ----------------------------------------------------------------------------


def _field(obj: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise NsmTransportError(f"response lacks {key!r}", where=where)
    value = obj[key]
    if typ is int and isinstance(value, bool):
        raise NsmTransportError(f"{key!r} should be int, got bool", where=where)
    if not isinstance(value, typ):
        raise NsmTransportError(f"{key!r} should be {typ.__name__}, got {type(value).__name__}", where=where)
    return value


def decode_response(data: bytes, expected: str) -> Any:
    """Decode a response and return the body of the ``expected`` variant (None for unit variants).

    ``{"Error": code}`` raises :class:`NsmError`; anything else unexpected raises NsmTransportError.
    """
    where = f"nsm.{expected}"
    if len(data) > MAX_RESPONSE:
        raise NsmTransportError(f"response is {len(data)} bytes, more than {MAX_RESPONSE}", where=where)
    try:
        message = cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many types on garbage
        raise NsmTransportError(f"response is not CBOR: {exc}", where=where) from exc
    if isinstance(message, str):
        if message == expected:
            return None
        raise NsmTransportError(f"unexpected response {message[:40]!r}", where=where)
    if not isinstance(message, Mapping) or len(message) != 1:
        raise NsmTransportError("response is not a 1-entry map", where=where)
    ((name, body),) = message.items()
    if name == "Error":
        code = body if isinstance(body, str) and body in ERROR_CODES else "InvalidResponse"
        raise NsmError(code, where=where)
    if name != expected:
        raise NsmTransportError(f"expected a {expected} response, got {str(name)[:40]!r}", where=where)
    if not isinstance(body, Mapping):
        raise NsmTransportError("response body is not a map", where=where)
    return body


def parse_describe_nsm(body: Mapping[str, Any]) -> NsmDescription:
    where = "nsm.DescribeNSM"
    locked = _field(body, "locked_pcrs", Sequence, where)
    if isinstance(locked, str | bytes) or not all(isinstance(i, int) and not isinstance(i, bool) for i in locked):
        raise NsmTransportError("'locked_pcrs' should be a list of ints", where=where)
    return NsmDescription(
        version_major=_field(body, "version_major", int, where),
        version_minor=_field(body, "version_minor", int, where),
        version_patch=_field(body, "version_patch", int, where),
        module_id=_field(body, "module_id", str, where),
        max_pcrs=_field(body, "max_pcrs", int, where),
        locked_pcrs=sorted(int(i) for i in locked),
        digest=_field(body, "digest", str, where),
    )


# --- transports -----------------------------------------------------------------------------------


class Transport(Protocol):
    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


class _IoVec(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _NsmRaw(ctypes.Structure):
    _fields_ = [("request", _IoVec), ("response", _IoVec)]


class DeviceTransport:
    """The real /dev/nsm: one ioctl per request."""

    def __init__(self, path: Path = DEVICE) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise NsmTransportError(f"cannot open {path}: {exc.strerror}", where=str(path)) from exc
        self._lock = threading.Lock()

    def roundtrip(self, request: bytes) -> bytes:
        if len(request) > MAX_REQUEST:
            raise NsmError("InputTooLarge", where=str(self.path))
        req_buf = ctypes.create_string_buffer(request, len(request))
        resp_buf = ctypes.create_string_buffer(MAX_RESPONSE)
        raw = _NsmRaw(
            _IoVec(ctypes.addressof(req_buf), len(request)),
            _IoVec(ctypes.addressof(resp_buf), MAX_RESPONSE),
        )
        with self._lock:
            try:
                fcntl.ioctl(self._fd, NSM_IOCTL_RAW, raw, True)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise NsmError("InputTooLarge", where=str(self.path)) from exc
                raise NsmTransportError(f"NSM ioctl failed: {exc.strerror}", where=str(self.path)) from exc
        length = min(int(raw.response.len), MAX_RESPONSE)
        return resp_buf.raw[:length]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SocketTransport:
    """The emulator's NSM socket: one connection, requests one at a time."""

    def __init__(self, path: Path, timeout: float = SOCKET_TIMEOUT) -> None:
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(short_path(path))
        except OSError as exc:
            sock.close()
            raise NsmTransportError(f"cannot connect to the NSM socket: {exc.strerror or exc}", where=str(path)) from exc
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()

    def _recv_exact(self, size: int) -> bytes:
        assert self._sock is not None
        chunks = []
        remaining = size
        while remaining:
            chunk = self._sock.recv(min(remaining, 65536))
            if not chunk:
                raise NsmTransportError("NSM socket closed mid-response", where=str(self.path))
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def roundtrip(self, request: bytes) -> bytes:
        if len(request) > MAX_REQUEST:
            raise NsmError("InputTooLarge", where=str(self.path))
        with self._lock:
            if self._sock is None:
                raise NsmTransportError("NSM client is closed", where=str(self.path))
            try:
                self._sock.sendall(struct.pack(">I", len(request)) + request)
                (length,) = struct.unpack(">I", self._recv_exact(4))
                if length > MAX_RESPONSE:
                    self.close_locked()
                    raise NsmTransportError(f"NSM response of {length} bytes exceeds {MAX_RESPONSE}",
                                            where=str(self.path))
                return self._recv_exact(length)
            except OSError as exc:
                self.close_locked()
                raise NsmTransportError(f"NSM socket failed: {exc}", where=str(self.path)) from exc

    def close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


# --- the client -----------------------------------------------------------------------------------


class NsmClient:
    """High-level NSM calls. Use :meth:`open` to pick the device or the emulator socket."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def open(cls, device: Path = DEVICE, socket_path: str | None = None) -> NsmClient:
        """/dev/nsm when it exists, else $NITRODECK_NSM_SOCKET, else a typed error."""
        if device.exists():
            return cls(DeviceTransport(device))
        sock = socket_path if socket_path is not None else os.environ.get(ENV_SOCKET)
        if sock:
            return cls(SocketTransport(Path(sock)))
        raise NsmTransportError(
            f"no NSM: {device} does not exist and ${ENV_SOCKET} is not set",
            where="nsm",
            hint="run inside a Nitro enclave, or under the emulator (nitro-emu) which sets the socket",
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> NsmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, message: Any, expected: str) -> Any:
        return decode_response(self.transport.roundtrip(encode_request(message)), expected)

    def describe_nsm(self) -> NsmDescription:
        return parse_describe_nsm(self.call("DescribeNSM", "DescribeNSM"))

    def describe_pcr(self, index: int) -> PcrDescription:
        body = self.call({"DescribePCR": {"index": index}}, "DescribePCR")
        where = "nsm.DescribePCR"
        return PcrDescription(lock=_field(body, "lock", bool, where), data=_field(body, "data", bytes, where))

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR; returns its new value."""
        body = self.call({"ExtendPCR": {"index": index, "data": bytes(data)}}, "ExtendPCR")
        return bytes(_field(body, "data", bytes, "nsm.ExtendPCR"))

    def lock_pcr(self, index: int) -> None:
        self.call({"LockPCR": {"index": index}}, "LockPCR")

    def lock_pcrs(self, range_end: int) -> None:
        """Lock PCRs [0, range_end)."""
        self.call({"LockPCRs": {"range": range_end}}, "LockPCRs")

    def get_random(self, n: int = 32) -> bytes:
        """``n`` random bytes from the NSM (it answers up to 256 per call, so this may ask several times)."""
        if n < 0 or n > 256 * MAX_RANDOM_CALLS:
            raise NsmError("InvalidArgument", f"get_random takes 0..{256 * MAX_RANDOM_CALLS} bytes, not {n}")
        out = bytearray()
        for _ in range(MAX_RANDOM_CALLS):
            if len(out) >= n:
                break
            chunk = _field(self.call("GetRandom", "GetRandom"), "random", bytes, "nsm.GetRandom")
            if not chunk:
                raise NsmTransportError("NSM returned no random bytes", where="nsm.GetRandom")
            out += chunk
        if len(out) < n:
            raise NsmTransportError("NSM returned too few random bytes", where="nsm.GetRandom")
        return bytes(out[:n])

    def attestation(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        """An attestation document (COSE_Sign1 bytes). All three fields are sent, null when absent."""
        request = {
            "Attestation": {
                "user_data": _check_field("user_data", user_data),
                "nonce": _check_field("nonce", nonce),
                "public_key": _check_field("public_key", public_key),
            }
        }
        body = self.call(request, "Attestation")
        return bytes(_field(body, "document", bytes, "nsm.Attestation"))
