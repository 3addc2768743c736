"""Who may talk to the agent: loopback freely, anything else only with a bearer token.

The token lives in a file only its owner can read (like an SSH key), so it never appears on a
command line (`ps`) or in the environment of every child process.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import stat
from pathlib import Path

from core.errors import NitrodeckError

MAX_TOKEN_FILE = 4096
MIN_TOKEN_CHARS = 16


class AgentConfigError(NitrodeckError):
    """The agent refuses to start as configured (exposed without a token, a readable token file...)."""

    code = "ND-AGENT-CONFIG"
    exit_status = 2


def parse_listen(text: str, default_port: int = 9181) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT``."""
    raw = text.strip()
    if not raw or len(raw) > 300:
        raise AgentConfigError("give --listen as HOST:PORT", where="--listen")
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif ":" in raw:
        host, port_text = raw, ""  # a bare IPv6 address
    else:
        host, port_text = raw, ""
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise AgentConfigError(f"{port_text[:20]!r} is not a port (0-65535)", where="--listen")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def load_token(path: Path) -> str:
    """The bearer token from ``path``: a regular file, not readable by group or others, 16+ characters."""
    where = f"--token-file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise AgentConfigError(f"cannot open the token file: {exc.strerror or exc}", where=where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentConfigError("the token file is not a regular file", where=where)
        if st.st_mode & 0o077:
            raise AgentConfigError(
                f"the token file is mode {stat.S_IMODE(st.st_mode):04o}: group or others can read it",
                where=where,
                hint=f"chmod 600 {path}",
            )
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE:
        raise AgentConfigError(f"the token file is larger than {MAX_TOKEN_FILE} bytes", where=where)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise AgentConfigError("the token is not ASCII", where=where) from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise AgentConfigError(
            f"the token must be one word of at least {MIN_TOKEN_CHARS} characters",
            where=where,
            hint="e.g. `openssl rand -hex 32 > FILE && chmod 600 FILE`",
        )
    return token


def require_token_off_loopback(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise AgentConfigError(
            f"refusing to listen on {host} without a bearer token",
            where="--listen",
            hint="give --token-file FILE (mode 0600), or listen on 127.0.0.1",
        )


def authorized(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time; everything passes without a token."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())
