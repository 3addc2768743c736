"""A vsock-proxy compatible relay: vsock (parent CID 3, LOCAL_PORT) -> TCP REMOTE_ADDR:REMOTE_PORT.

It behaves like nitro-cli's ``vsock-proxy``: the remote is checked once at startup against an
allowlist file (``allowlist: - {address: ..., port: ...}``): the port must match, then either the
address matches literally or one of the allowlisted host's resolved IPs equals the remote's resolved
IP. Refusals use vsock-proxy's own messages so operators' runbooks still apply. Each accepted vsock
connection is relayed to a fresh TCP connection; at most ``workers`` run at once (the rest wait in
the listen backlog), like vsock-proxy's worker pool.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from core import home
from core.channel.vsock import Transport
from core.errors import NitrodeckError
from core.files import open_regular
from core.yamlsafe import YamlRefused, load_yaml

log = logging.getLogger("nitrodeck.proxy")

REAL_CONFIG = Path("/etc/nitro_enclaves/vsock-proxy.yaml")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_ENTRIES = 4096
DEFAULT_WORKERS = 4
_BUF = 64 * 1024
_POLL = 0.25

ALLOWLIST_PREFIX = "Error at checking the allowlist: "
NOT_ALLOWED = f"{ALLOWLIST_PREFIX}The given address and port are not allowed"


class ProxyError(NitrodeckError):
    """vsock-proxy startup failure; ``message`` is vsock-proxy's own text."""

    code = "ND-PROXY"

    def vsock_proxy_line(self) -> str:
        """What vsock-proxy prints on stderr for this error (Rust's ``Error: "<msg>"``)."""
        return f'Error: "{self.message}"'


@dataclass(frozen=True)
class AllowEntry:
    address: str
    port: int


def default_config(emulated: bool) -> Path:
    """The emulator's etc/vsock-proxy.yaml when emulated, else the system file."""
    return home.emulator_etc() / "vsock-proxy.yaml" if emulated else REAL_CONFIG


def shipped_allowlist() -> str:
    """nitro-cli's own vsock-proxy.yaml (the regional KMS endpoints on 443), as it installs it."""
    return resources.files("core").joinpath("data", "vsock-proxy.yaml").read_text(encoding="utf-8")


def ensure_emulated_config() -> Path:
    """The emulator's vsock-proxy.yaml, created from nitro-cli's shipped list when absent (a parent
    with nitro-cli installed has that file; an empty allowlist would be no default at all)."""
    path = default_config(emulated=True)
    if not path.exists():
        home.ensure(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(shipped_allowlist(), encoding="utf-8")
        try:
            os.link(tmp, path)  # a concurrent first user's file wins; both are the same text
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path


def load_allowlist_items(path: Path) -> list[Any]:
    """The allowlist's raw items: vsock-proxy checks each one only when it reaches it."""
    try:
        # never blocks on a FIFO or device named as the allowlist: refused like an unreadable file
        with os.fdopen(open_regular(path), "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except NitrodeckError as exc:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Could not open the file", where=str(path), hint=exc.message) from None
    except OSError as exc:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Could not open the file", where=str(path), hint=exc.strerror) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Bad yaml format", where=str(path), hint=f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = load_yaml(raw)  # aliases, deep nesting and node floods refused before building
    except YamlRefused as exc:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Bad yaml format", where=str(path), hint=str(exc)) from None
    except yaml.YAMLError as exc:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Bad yaml format", where=str(path)) from exc
    items = doc.get("allowlist") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ProxyError(f"{ALLOWLIST_PREFIX}No allowlist field", where=str(path))
    if len(items) > MAX_ENTRIES:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Bad yaml format", where=str(path), hint=f"more than {MAX_ENTRIES} entries")
    return list(items)


def load_allowlist(path: Path) -> list[AllowEntry]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ProxyError("Could not open the file", where=str(path), hint=exc.strerror) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ProxyError("Bad yaml format", where=str(path), hint=f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = load_yaml(raw)  # aliases, deep nesting and node floods refused before building
    except YamlRefused as exc:
        raise ProxyError("Bad yaml format", where=str(path), hint=str(exc)) from None
    except yaml.YAMLError as exc:
        raise ProxyError("Bad yaml format", where=str(path)) from exc
    return parse_allowlist(doc, str(path))


def parse_allowlist(doc: Any, where: str = "allowlist") -> list[AllowEntry]:
    if not isinstance(doc, dict) or "allowlist" not in doc:
        raise ProxyError("No allowlist field", where=where)
    items = doc["allowlist"]
    if not isinstance(items, list):
        # vsock-proxy: an allowlist that is not a list (null included) is no allowlist
        raise ProxyError(
            "No allowlist field", where=where, hint="allowlist must be a list of {address, port}"
        )
    if len(items) > MAX_ENTRIES:
        raise ProxyError("Bad yaml format", where=where, hint=f"more than {MAX_ENTRIES} entries")
    out = []
    for i, item in enumerate(items):
        address = item.get("address") if isinstance(item, dict) else None
        port = item.get("port") if isinstance(item, dict) else None
        if not isinstance(address, str) or not address:
            raise ProxyError("No address field", where=f"{where}: allowlist[{i}]")
        if isinstance(port, bool) or not isinstance(port, int):
            raise ProxyError("No port field or invalid type", where=f"{where}: allowlist[{i}]")
        if not 0 <= port <= 65535:
            raise ProxyError(
                "Bad yaml format", where=f"{where}: allowlist[{i}].port", hint="port is 0..65535"
            )
        out.append(AllowEntry(address, port))
    return out


def _family(ip_version: int | None) -> int:
    return {4: socket.AF_INET, 6: socket.AF_INET6}.get(ip_version or 0, socket.AF_UNSPEC)


def resolve(host: str, ip_version: int | None = None) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, _family(ip_version), socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_remote(host: str, ip_version: int | None = None) -> str:
    """vsock_proxy dns.rs resolve_single: the remote's first address, or its error text."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except UnicodeError:
        raise ProxyError(f"{ALLOWLIST_PREFIX}Could not parse domain name", where=host) from None
    except socket.gaierror:
        raise ProxyError(f"{ALLOWLIST_PREFIX}DNS lookup failed!", where=host) from None
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not ips:
        raise ProxyError(f"{ALLOWLIST_PREFIX}DNS lookup returned no IP addresses!", where=host)
    if ip_version in (4, 6):
        ips = [ip for ip in ips if (":" in ip) == (ip_version == 6)]
        if not ips:
            raise ProxyError(f"{ALLOWLIST_PREFIX}No accepted IP was found.", where=host)
    return ips[0]


def _entry(item: AllowEntry | Any, where: str) -> AllowEntry:
    """One allowlist item, checked when vsock-proxy reaches it (proxy.rs check_allowlist): the port is
    read as an integer and cast to u16, which wraps."""
    if isinstance(item, AllowEntry):
        return item
    address = item.get("address") if isinstance(item, dict) else None
    port = item.get("port") if isinstance(item, dict) else None
    if not isinstance(address, str):
        raise ProxyError(f"{ALLOWLIST_PREFIX}No address field", where=where)
    if isinstance(port, bool) or not isinstance(port, int) or not -(2**63) <= port < 2**63:
        raise ProxyError(f"{ALLOWLIST_PREFIX}No port field or invalid type", where=where)
    return AllowEntry(address, port & 0xFFFF)


def _usable_entries(items: Iterable[AllowEntry | Any]) -> list[AllowEntry]:
    """The well-formed entries (vsock-proxy checks items lazily, so later ones may be broken)."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_entry(item, f"allowlist[{i}]"))
        except ProxyError:
            continue
    return out


def _normal_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text


def check_allowlist(
    remote_addr: str, remote_port: int, entries: Iterable[AllowEntry | Any], ip_version: int | None = None
) -> None:
    """vsock-proxy's startup check, in its order: resolve the remote first (a name that does not resolve
    fails here, allowlisted or not), then per entry: the port, the literal name, the entry's addresses.
    Raises ProxyError with vsock-proxy's message (NOT_ALLOWED when nothing matched)."""
    remote_ip = resolve_remote(remote_addr, ip_version)
    for i, item in enumerate(entries):
        entry = _entry(item, f"allowlist[{i}]")
        if entry.port != remote_port:
            continue
        if entry.address == remote_addr:
            return
        if remote_ip in resolve(entry.address, ip_version):
            return
    log.warning("Unable to resolve allow listed host: %r.", remote_addr)
    raise ProxyError(NOT_ALLOWED, where=f"{remote_addr}:{remote_port}")


class VsockProxy:
    """The relay, usable in-process: ``start()`` checks the allowlist and listens; ``stop()`` ends it."""

    def __init__(
        self,
        local_port: int,
        remote_addr: str,
        remote_port: int,
        *,
        transport: Transport,
        allowlist: Sequence[AllowEntry] | None = None,
        config: Path | None = None,
        workers: int = DEFAULT_WORKERS,
        ip_version: int | None = None,
    ) -> None:
        if workers < 1:
            raise ProxyError("num_workers must be at least 1", where="--num_workers")
        if ip_version not in (None, 4, 6):
            raise ProxyError("IP version must be 4 or 6", where="-4/-6")
        if not 0 <= remote_port <= 65535:
            raise ProxyError("remote_port must be 0..65535", where="REMOTE_PORT")
        if not 0 <= local_port <= 0xFFFFFFFF:
            raise ProxyError("local_port must be a u32", where="LOCAL_PORT")
        self.local_port = local_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.transport = transport
        self.workers = workers
        self.ip_version = ip_version
        self._allowlist = list(allowlist) if allowlist is not None else None
        self._entries: list[AllowEntry] = []
        self._config = config or default_config(transport.emulated)
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(workers)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor: threading.Thread | None = None
        self.connections = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> VsockProxy:
        entries: Sequence[AllowEntry | Any]
        if self._allowlist is not None:
            entries = self._allowlist
        else:
            if self._config == default_config(emulated=True) and self.transport.emulated:
                ensure_emulated_config()
            entries = load_allowlist_items(self._config)
        check_allowlist(self.remote_addr, self.remote_port, entries, self.ip_version)
        self._entries = _usable_entries(entries)
        try:
            self._listener = self.transport.listen(self.local_port)
        except OSError as exc:
            raise ProxyError(
                f"cannot listen on vsock port {self.local_port}: {exc.strerror or exc}", where="LOCAL_PORT"
            ) from exc
        self._listener.settimeout(_POLL)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"vsock-proxy-{self.local_port}", daemon=True
        )
        self._acceptor.start()
        log.info(
            "vsock-proxy listening on vsock port %d -> %s:%d",
            self.local_port,
            self.remote_addr,
            self.remote_port,
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)

    def __enter__(self) -> VsockProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until stop() (another thread or a signal handler) ends it."""
        while not self._stop.wait(1.0):
            pass

    # --- work ----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            # take a worker slot before accepting, so excess clients queue in the backlog
            if not self._slots.acquire(timeout=_POLL):
                continue
            try:
                conn, _peer = self.transport.accept(self._listener)
            except TimeoutError:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                if self._stop.is_set():
                    return
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True, name="vsock-proxy-conn")
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def permitted(self, ip: str) -> bool:
        """Whether connecting to ``ip`` passes the allowlist now: the remote is an entry by name
        (then whatever that name resolves to is what the operator allowed), or ``ip`` is among the
        addresses an entry with our port resolves to at this moment. Checked for every address of
        every connection: the start-up check saw only the first address, once (DNS rebinding)."""
        wanted = _normal_ip(ip)
        for entry in self._entries:
            if entry.port != self.remote_port:
                continue
            if entry.address == self.remote_addr or _normal_ip(entry.address) == wanted:
                return True
            if wanted in {_normal_ip(a) for a in resolve(entry.address, self.ip_version)}:
                return True
        return False

    def _connect_family(self) -> socket.socket:
        infos = socket.getaddrinfo(
            self.remote_addr, self.remote_port, _family(self.ip_version), socket.SOCK_STREAM
        )
        last: OSError = OSError("no address")
        for fam, typ, proto, _cn, addr in infos[:8]:
            if not self.permitted(str(addr[0])):
                log.warning("%s resolved to %s, which the allowlist does not allow: skipped", self.remote_addr, addr[0])
                last = OSError(f"{addr[0]} is not allowlisted")
                continue
            sock = socket.socket(fam, typ, proto)
            sock.settimeout(10)
            try:
                sock.connect(addr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last

    def _serve(self, vconn: socket.socket) -> None:
        try:
            try:
                remote = self._connect_family()
            except OSError as exc:
                log.warning("cannot reach %s:%d: %s", self.remote_addr, self.remote_port, exc)
                return
            remote.settimeout(None)
            try:
                relay(vconn, remote, self._stop)
            finally:
                remote.close()
        finally:
            vconn.close()
            self._slots.release()


def relay(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy both ways until both sides are done (half-closes are passed on)."""
    sel = selectors.DefaultSelector()
    peer = {a: b, b: a}
    for s in (a, b):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_reads = 2
    try:
        while open_reads and not stop.is_set():
            for key, _ev in sel.select(_POLL):
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst = peer[src]
                try:
                    data = src.recv(_BUF)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    sel.unregister(src)
                    open_reads -= 1
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                dst.setblocking(True)
                try:
                    dst.sendall(data)
                except OSError:
                    return
                finally:
                    dst.setblocking(False)
    finally:
        sel.close()
