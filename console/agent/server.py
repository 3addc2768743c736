"""The agent's HTTP server: GET and HEAD only, over the cached host state (console/agent/state.py).

Endpoints: /status (`status --json`), /enclaves (describe-enclaves' array), /metrics (Prometheus),
/events (the journal, JSON), /events/stream (server-sent events), /healthz. Every other method on
every path is 405, so no request can change anything whatever the flags. With a token every request
(loopback included) needs ``Authorization: Bearer``; refusals are 401 and counted in
``nitrodeck_agent_unauthorized_requests_total``.

Bounded: a fixed number of requests in flight (503 beyond), a few event streams, a socket timeout
against slow clients, an upper limit on query strings and on /events answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from console.agent.state import HostState
from console.cmd_lifecycle import enclave_json, status_json
from console.output import to_jsonable
from core.errors import NitrodeckError
from core.ops.metrics import SnapshotCollector

log = logging.getLogger("nitrodeck.agent")

MAX_IN_FLIGHT = 64
MAX_STREAMS = 16
MAX_QUERY = 2048
MAX_EVENTS = 10_000
DEFAULT_EVENTS = 1_000
SOCKET_TIMEOUT_S = 30.0
#: a comment line on idle event streams, so proxies keep them open and dead clients are noticed
HEARTBEAT_S = 15.0
STREAM_POLL_S = 0.25
ENDPOINTS = ("/status", "/enclaves", "/metrics", "/events", "/events/stream", "/healthz")


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], state: HostState, token: str | None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        self.token = token
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(state.current))
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, AgentHandler)
        if tls is not None:
            # the handshake happens in the request's thread (on first read), never in accept()
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = "https" if tls is not None else "http"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else str(host)
        return f"{self.scheme}://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    from console.agent.auth import AgentConfigError

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise AgentConfigError(f"cannot load the TLS certificate and key: {exc}", where="--tls-cert/--tls-key") from None
    return ctx


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "nitrodeck-agent"
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    # headers and body are two writes: without TCP_NODELAY, Nagle and the client's delayed ACK add
    # ~40 ms to every keep-alive answer (benchmarks/agent.py measures it)
    disable_nagle_algorithm = True

    # -- every method: only GET and HEAD exist

    def __getattr__(self, name: str) -> Any:
        # http.server calls do_<METHOD>; any method it does not find would be 501: make it 405
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        if not self._authorized():
            return
        self.close_connection = True  # the body (if any) is never read
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED,
                        {"error": f"{self.command[:16]} is not allowed: the agent is read-only"},
                        extra={"Allow": "GET, HEAD"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    # -- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.address_string(), *args)

    def _authorized(self) -> bool:
        from console.agent.auth import authorized

        if authorized(self.headers.get("Authorization"), self.server.token):
            return True
        self.server.state.count_unauthorized()
        self.close_connection = True
        self._send_json(HTTPStatus.UNAUTHORIZED, {"error": "a bearer token is required"},
                        extra={"WWW-Authenticate": 'Bearer realm="nitrodeck"'})
        return False

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        body = (json.dumps(to_jsonable(obj), ensure_ascii=False, indent=2) + "\n").encode()
        self._send(status, body, "application/json", extra)

    def _dispatch(self, head: bool) -> None:
        if not self._authorized():
            return
        if len(self.path) > MAX_QUERY:
            self._send_json(HTTPStatus.REQUEST_URI_TOO_LONG, {"error": "the request line is too long"})
            return
        parts = urlsplit(self.path)
        route = parts.path.rstrip("/") or "/"
        try:
            query = {k: v[-1] for k, v in parse_qs(parts.query, max_num_fields=16).items()}
        except ValueError:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": "too many query parameters"})
            return
        handler = {
            "/": self._index,
            "/healthz": self._healthz,
            "/status": self._status,
            "/enclaves": self._enclaves,
            "/metrics": self._metrics,
            "/events": self._events,
            "/events/stream": self._stream,
        }.get(route)
        if handler is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint; try {', '.join(ENDPOINTS)}"})
            return
        try:
            handler(query)
        except NitrodeckError as err:
            self._send_json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": err.to_dict()})

    # -- endpoints

    def _index(self, query: dict[str, str]) -> None:
        self._send_json(HTTPStatus.OK, {"endpoints": list(ENDPOINTS), "read_only": True})

    def _healthz(self, query: dict[str, str]) -> None:
        snap = self.server.state.snapshot
        ok = snap.status is not None
        body = {"ok": ok, "snapshot_age_s": round(max(0.0, time.time() - snap.taken), 3),
                "last_error": snap.error}
        self._send_json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)

    def _require_status(self) -> Any:
        snap = self.server.state.snapshot
        if snap.status is None:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE,
                            {"ok": False, "error": f"no host state yet: {snap.error or 'starting'}"})
        return snap

    def _status(self, query: dict[str, str]) -> None:
        snap = self._require_status()
        if snap.status is None:
            return
        # `status --json`'s object, plus when each enclave started (from the uptimes the metrics use)
        started = {
            enclave_id: datetime.fromtimestamp(snap.taken - uptime, UTC).isoformat(timespec="seconds")
            for enclave_id, uptime in snap.uptimes.items()
        }
        pins = {k: j.key for k, j in snap.judgements.items()}
        journal = self.server.state.journal
        about = {"path": str(journal.path), "warnings": list(journal.warnings)} if journal is not None else {}
        self._send_json(HTTPStatus.OK, status_json(snap.status, snap.verdicts, pins, snap.exited, about,
                                                   judgements=snap.judgements, started=started))

    def _enclaves(self, query: dict[str, str]) -> None:
        snap = self._require_status()
        if snap.status is not None:
            # nitro-cli's describe-enclaves array as status gathers it: with --metadata (image name,
            # version and build metadata), without nitrodeck's ExpectedPCRs verdict
            self._send_json(HTTPStatus.OK, [enclave_json(e) for e in snap.status.enclaves])

    def _metrics(self, query: dict[str, str]) -> None:
        # the classic text format (0.0.4): what every Prometheus 2.x and 3.x, Grafana Agent and the
        # CloudWatch agent's Prometheus scraper read; all our names are legacy-valid, so nothing is lost
        self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_PLAIN_0_0_4)

    def _journal(self) -> Any:
        journal = self.server.state.journal
        if journal is None:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "this nitrodeck has no lifecycle journal"})
        return journal

    @staticmethod
    def _since(query: dict[str, str]) -> datetime | None:
        if "since" not in query:
            return None
        from core.ops.journal import parse_since  # type: ignore[import-not-found,unused-ignore]

        return parse_since(query["since"])  # type: ignore[no-any-return]

    def _events(self, query: dict[str, str]) -> None:
        journal = self._journal()
        if journal is None:
            return
        text = query.get("limit", str(DEFAULT_EVENTS))
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_EVENTS:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"limit must be 1 to {MAX_EVENTS}"})
            return
        events = journal.read(since=self._since(query), enclave=query.get("enclave") or None)
        if query.get("event"):
            events = [e for e in events if e.event == query["event"]]
        self._send_json(HTTPStatus.OK, {"events": [e.to_json() for e in events[-int(text):]]})

    def _stream(self, query: dict[str, str]) -> None:
        journal = self._journal()
        if journal is None:
            return
        since = self._since(query) or datetime.now(UTC)  # by default: what happens from now on
        if not self.server._streams.acquire(blocking=False):
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"already {MAX_STREAMS} event streams open"})
            return
        try:
            self._stream_events(journal, since, query.get("enclave") or None)
        finally:
            self.server._streams.release()

    def _stream_events(self, journal: Any, since: datetime, enclave: str | None) -> None:
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        gone = threading.Event()
        last_write = [time.monotonic()]

        def write(text: str) -> None:
            try:
                self.wfile.write(text.encode())
                self.wfile.flush()
            except OSError:
                gone.set()
            last_write[0] = time.monotonic()

        def heartbeat() -> None:
            if time.monotonic() - last_write[0] >= HEARTBEAT_S:
                write(": keep-alive\n\n")

        write(": nitrodeck events\n\n")
        stop = lambda: gone.is_set() or self.server.state.stopping  # noqa: E731
        for event in journal.follow(since=since, enclave=enclave, stop=stop, poll=STREAM_POLL_S, tick=heartbeat):
            data = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))
            write(f"id: {event.time}\nevent: {event.event}\ndata: {data}\n\n")
            if gone.is_set():
                return
