"""Messages between nitro-emu commands and enclave supervisors: 4-byte big-endian length + JSON object.

Used on the launch channel (run-enclave <-> its new supervisor) and on each supervisor's control
socket (describe / terminate). Frames are size-limited and must decode to a JSON object; requests on
the control socket must name a known command.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any

from core.errors import InputTooLarge, NitrodeckError

MAX_FRAME = 256 * 1024
COMMANDS = ("describe", "terminate", "ping")


class ControlError(NitrodeckError):
    code = "EMU-CONTROL"


def encode(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise InputTooLarge(f"control message of {len(body)} bytes", where="control")
    return struct.pack(">I", len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_FRAME:
        raise InputTooLarge(f"control message of {len(body)} bytes", where="control")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"not JSON: {exc}", where="control") from None
    if not isinstance(obj, dict):
        raise ControlError("expected a JSON object", where="control")
    return obj


def parse_request(body: bytes) -> str:
    """The command named by a control-socket request."""
    return parse_request_full(body)[0]


def parse_request_full(body: bytes) -> tuple[str, float | None]:
    """The command and its deadline (wall-clock seconds; past it the client no longer waits)."""
    obj = decode_body(body)
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise ControlError(f"unknown command {str(cmd)[:40]!r}", where="control")
    deadline = obj.get("deadline")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float) or not math.isfinite(deadline)
    ):
        raise ControlError("deadline must be a number of seconds", where="control")
    return str(cmd), None if deadline is None else float(deadline)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(encode(obj))


def recv_body(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise InputTooLarge(f"control message of {size} bytes", where="control")
    return _recv_exact(sock, size)


def recv(sock: socket.socket) -> dict[str, Any]:
    return decode_body(recv_body(sock))
