"""The emulator's Nitro Security Module: the NSM request/response protocol over a Unix socket.

It behaves like the real device as far as the public sources and QEMU's virtio-nsm tell: 32 SHA-384
PCRs, 0..15 locked at boot, 16..31 extendable (new = SHA384(old || data)) and lockable, GetRandom of
256 bytes, and attestation documents with the exact CBOR shape of real ones, signed by a leaf under
the emulator's test root (emulator/pki.py). :meth:`EmulatedNsm.handle` never raises on bad input: it
answers ``{"Error": <code>}`` as the device does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2

from core import home
from core.channel import vsock_peers
from core.channel.unixsock import remove_stale, short_path
from core.crypto import cose
from core.errors import NitrodeckError
from emulator.pki import EmulatorPki

MAX_PCRS = 32
LOCKED_AT_BOOT = range(16)
PCR_LEN = 48
MAX_REQUEST = 0x1000  # the driver refuses larger requests with EMSGSIZE
MAX_FIELD = 1024  # user_data / nonce / public_key: what the real NSM accepts
RANDOM_LEN = 256
#: frames larger than this are not even read: the connection is closed
MAX_FRAME = 64 * 1024
MAX_CONNECTIONS = 64
VERSION = (1, 0, 0)
DEBUG_ZEROED = (0, 1, 2, 8)

# the signing key and algorithm header every real document carries: {1: -35} (ES384)
_PROTECTED = bytes.fromhex("a1013822")


def pcr_from_string(text: str) -> bytes:
    """PCR3/PCR4 style: SHA384(48 zero bytes || utf-8 text), i.e. one extend from zero."""
    return hashlib.sha384(bytes(PCR_LEN) + text.encode("utf-8")).digest()


class EmulatedNsmError(NitrodeckError):
    """The emulated NSM was set up wrongly (bad PCR values, unusable socket path)."""

    code = "ND-EMU-NSM"


class _Failure(Exception):
    """Internal: ends request handling with an NSM error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _error(code: str) -> bytes:
    return cbor2.dumps({"Error": code})


def _index(args: Any, key: str = "index") -> int:
    if not isinstance(args, Mapping) or key not in args:
        raise _Failure("InvalidOperation")
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFF:
        raise _Failure("InvalidOperation")
    return value


def _optional_bytes(args: Mapping[Any, Any], key: str, low: int = 0) -> bytes | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise _Failure("InvalidArgument")
    if not low <= len(value) <= MAX_FIELD:
        raise _Failure("InvalidArgument")
    return value


class EmulatedNsm:
    """One enclave's NSM. Thread-safe: the server calls :meth:`handle` from many threads."""

    def __init__(
        self,
        module_id: str,
        pcrs: dict[int, bytes],
        debug: bool,
        instance_id: str,
        role_arn: str | None,
        pki: EmulatorPki | None = None,
    ) -> None:
        self.module_id = module_id
        self.debug = debug
        self.pki = pki if pki is not None else EmulatorPki.load_or_create(home.emulator_etc())
        self._lock = threading.Lock()
        self._pcrs = [bytes(PCR_LEN) for _ in range(MAX_PCRS)]
        for index, value in pcrs.items():
            if not 0 <= index < MAX_PCRS or len(value) != PCR_LEN:
                raise EmulatedNsmError(f"PCR{index} must be {PCR_LEN} bytes, index 0..{MAX_PCRS - 1}",
                                       where=f"{module_id} PCR{index}")
            self._pcrs[index] = bytes(value)
        if debug:
            # debug-mode enclaves report zero image measurements, as real ones do
            for index in DEBUG_ZEROED:
                self._pcrs[index] = bytes(PCR_LEN)
        self._pcrs[3] = pcr_from_string(role_arn) if role_arn else bytes(PCR_LEN)
        self._pcrs[4] = pcr_from_string(instance_id)
        self._locked = set(LOCKED_AT_BOOT)

    # --- state, for the supervisor and tests ----------------------------------------------------

    def pcr(self, index: int) -> bytes:
        with self._lock:
            return self._pcrs[index]

    def locked(self) -> list[int]:
        with self._lock:
            return sorted(self._locked)

    # --- the protocol ---------------------------------------------------------------------------

    def handle(self, request: bytes) -> bytes:
        """One CBOR request -> one CBOR response. Never raises on bad input."""
        if len(request) > MAX_REQUEST:
            return _error("InputTooLarge")
        try:
            message = cbor2.loads(request)
        except Exception:  # noqa: BLE001 - cbor2 raises many types on garbage; all mean "malformed"
            return _error("InvalidOperation")
        try:
            return cbor2.dumps(self._dispatch(message))
        except _Failure as failure:
            return _error(failure.code)
        except Exception:  # noqa: BLE001 - a bug must not kill the device; report it as the NSM would
            return _error("InternalError")

    def _dispatch(self, message: Any) -> Any:
        if isinstance(message, str):
            if message == "DescribeNSM":
                return self._describe_nsm()
            if message == "GetRandom":
                return {"GetRandom": {"random": os.urandom(RANDOM_LEN)}}
            raise _Failure("InvalidOperation")
        if not isinstance(message, Mapping) or len(message) != 1:
            raise _Failure("InvalidOperation")
        ((name, args),) = message.items()
        if name == "DescribePCR":
            return self._describe_pcr(_index(args))
        if name == "ExtendPCR":
            index = _index(args)
            data = args.get("data")
            if not isinstance(data, bytes):
                raise _Failure("InvalidOperation")
            return self._extend(index, data)
        if name == "LockPCR":
            return self._lock_pcr(_index(args))
        if name == "LockPCRs":
            return self._lock_pcrs(_index(args, "range"))
        if name == "Attestation":
            if not isinstance(args, Mapping):
                raise _Failure("InvalidOperation")
            return self._attestation(
                _optional_bytes(args, "user_data"),
                _optional_bytes(args, "nonce"),
                # AWS: public_key is 1..1024 bytes; a document with an empty one is refused by every strict
                # verifier (ours: rule public-key), so the request is refused rather than signed
                _optional_bytes(args, "public_key", low=1),
            )
        raise _Failure("InvalidOperation")

    def _describe_nsm(self) -> Any:
        major, minor, patch = VERSION
        return {
            "DescribeNSM": {
                "version_major": major,
                "version_minor": minor,
                "version_patch": patch,
                "module_id": self.module_id,
                "max_pcrs": MAX_PCRS,
                "locked_pcrs": self.locked(),
                "digest": "SHA384",
            }
        }

    def _describe_pcr(self, index: int) -> Any:
        if index >= MAX_PCRS:
            raise _Failure("InvalidIndex")
        with self._lock:
            return {"DescribePCR": {"lock": index in self._locked, "data": self._pcrs[index]}}

    def _extend(self, index: int, data: bytes) -> Any:
        if index >= MAX_PCRS:
            raise _Failure("InvalidIndex")
        with self._lock:
            if index in self._locked:
                raise _Failure("ReadOnlyIndex")
            new = hashlib.sha384(self._pcrs[index] + data).digest()
            self._pcrs[index] = new
        return {"ExtendPCR": {"data": new}}

    def _lock_pcr(self, index: int) -> Any:
        if index >= MAX_PCRS:
            raise _Failure("InvalidIndex")
        with self._lock:
            if index in self._locked:
                raise _Failure("ReadOnlyIndex")
            self._locked.add(index)
        return "LockPCR"

    def _lock_pcrs(self, end: int) -> Any:
        if end > MAX_PCRS:
            raise _Failure("InvalidIndex")
        with self._lock:
            self._locked.update(range(end))
        return "LockPCRs"

    def _attestation(self, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None) -> Any:
        signer = self.pki.leaf_for(self.module_id)
        with self._lock:
            pcrs = {i: self._pcrs[i] for i in sorted(self._locked)}
        timestamp = time.time_ns() // 1_000_000
        payload = encode_payload(
            module_id=self.module_id,
            timestamp_ms=timestamp,
            pcrs=pcrs,
            certificate=signer.certificate,
            cabundle=list(signer.cabundle),
            public_key=public_key,
            user_data=user_data,
            nonce=nonce,
        )
        sign1 = cose.sign(payload, signer.key)
        assert sign1.protected == _PROTECTED  # the leaf is P-384, so the header is ES384
        return {"Attestation": {"document": sign1.to_bytes(tagged=False)}}


def encode_payload(
    *,
    module_id: str,
    timestamp_ms: int,
    pcrs: dict[int, bytes],
    certificate: bytes,
    cabundle: list[bytes],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> bytes:
    """The AttestationDocument map exactly as real NSMs write it.

    Written by hand rather than with one ``cbor2.dumps`` because the timestamp must use the 8-byte
    head (``0x1b``) real documents carry, where cbor2 would pick the shortest form.
    """
    dumps = cbor2.dumps
    parts = [
        b"\xa9",
        dumps("module_id") + dumps(module_id),
        dumps("digest") + dumps("SHA384"),
        dumps("timestamp") + b"\x1b" + struct.pack(">Q", timestamp_ms),
        dumps("pcrs") + dumps({i: pcrs[i] for i in sorted(pcrs)}),
        dumps("certificate") + dumps(certificate),
        dumps("cabundle") + dumps(cabundle),
        dumps("public_key") + dumps(public_key),
        dumps("user_data") + dumps(user_data),
        dumps("nonce") + dumps(nonce),
    ]
    return b"".join(parts)


# --- the socket server ----------------------------------------------------------------------------


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = conn.recv(min(remaining, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class NsmServer:
    """Serves one :class:`EmulatedNsm` on a Unix socket: 4-byte big-endian length + CBOR, both ways."""

    def __init__(
        self, nsm: EmulatedNsm, socket_path: Path, peer_allowed: Callable[[int], bool] | None = None
    ) -> None:
        self.nsm = nsm
        self.socket_path = socket_path
        # who may ask (by the PID the kernel reports for the client): the file mode cannot tell one
        # enclave from another, since every enclave runs as the same host user
        self.peer_allowed = peer_allowed
        remove_stale(socket_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(short_path(socket_path))
            # only the enclave (same user) may talk to its NSM
            os.chmod(short_path(socket_path), 0o600)
            self._sock.listen(16)
        except OSError as exc:
            self._sock.close()
            raise EmulatedNsmError(f"cannot serve the NSM socket: {exc.strerror or exc}", where=str(socket_path)) from exc
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self._accept_loop, name="nsm-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.peer_allowed is not None and not self.peer_allowed(_peer_pid(conn)):
                conn.close()  # another enclave's process: its NSM is not this one
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many clients at once: refuse rather than queue without bound
                continue
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="nsm-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                head = _recv_exact(conn, 4)
                if head is None:
                    return
                (length,) = struct.unpack(">I", head)
                if length > MAX_FRAME:
                    conn.sendall(_frame(_error("InputTooLarge")))
                    return
                body = _recv_exact(conn, length)
                if body is None:
                    return
                conn.sendall(_frame(self.nsm.handle(body)))
        except OSError:
            return
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._conns_lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(timeout=5)
        remove_stale(self.socket_path)

    def __enter__(self) -> NsmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def start_nsm_server(
    nsm: EmulatedNsm, socket_path: Path, peer_allowed: Callable[[int], bool] | None = None
) -> NsmServer:
    """Serve ``nsm`` on ``socket_path`` from background threads until ``.close()``; with
    ``peer_allowed``, only clients whose PID it accepts are served."""
    return NsmServer(nsm, socket_path, peer_allowed)


def _peer_pid(conn: socket.socket) -> int:
    return vsock_peers.peer_pid(conn)
