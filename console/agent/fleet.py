"""`nitrodeck fleet`: many parents read through their agents, one row each. No Textual here.

Hosts come from a YAML file (a list of ``name``, ``url``, ``token_file``, optional ``expected``) or from an
ECS cluster's ``nitrodeck.endpoint`` attributes (console/agent/ecs.py). Every host is asked in a bounded
thread pool with a short timeout, so one unreachable parent costs its timeout and never stalls the others;
each answer is read up to a fixed size, so 200 hosts cost bounded memory.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from core.errors import ConfigError
from core.files import read_limited

MAX_HOSTS_FILE = 256 * 1024
MAX_HOSTS = 2000
MAX_ANSWER = 4 * 1024 * 1024
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class HostEntry:
    name: str
    url: str
    token_file: str | None = None
    #: how many enclaves should run there (None: not said)
    expected: int | None = None
    #: PEM bundle to verify an https agent with (None: the system's CAs)
    ca_file: str | None = None


@dataclass
class HostReport:
    name: str
    url: str
    reachable: bool
    instance_id: str | None = None
    error: str | None = None
    enclaves: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    expected: int | None = None
    #: "match" / "mismatch" / "unpinned" / "debug" -> how many enclaves
    pcr: dict[str, int] = field(default_factory=dict)
    free_cpus: int | None = None
    pool_cpus: int | None = None
    last_exit: dict[str, Any] | None = None
    elapsed_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "url": self.url, "reachable": self.reachable, "instance_id": self.instance_id,
            "error": self.error, "enclaves": self.enclaves, "running": self.running, "expected": self.expected,
            "pcr": self.pcr, "free_cpus": self.free_cpus, "pool_cpus": self.pool_cpus,
            "last_exit": self.last_exit, "elapsed_ms": self.elapsed_ms,
        }


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise ConfigError("url must be an http(s) URL", where=where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url[:80]!r} is not an http(s) URL", where=where)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{url[:80]!r} has a bad port", where=where) from None
    return url.rstrip("/")


def parse_hosts(data: bytes, where: str) -> list[HostEntry]:
    """The hosts file: ``[{name, url, token_file?, expected?}, ...]`` (or ``{hosts: [...]}``)."""
    if len(data) > MAX_HOSTS_FILE:
        raise ConfigError(f"larger than {MAX_HOSTS_FILE} bytes", where=where)
    try:
        doc = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not YAML: {str(exc)[:200]}", where=where) from None
    if isinstance(doc, dict) and "hosts" in doc:
        doc = doc["hosts"]
    if not isinstance(doc, list):
        raise ConfigError("expected a list of hosts (name, url, token_file)", where=where)
    if len(doc) > MAX_HOSTS:
        raise ConfigError(f"more than {MAX_HOSTS} hosts", where=where)
    out: list[HostEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(doc):
        at = f"{where}: hosts[{index}]"
        if not isinstance(item, dict):
            raise ConfigError("each host is a mapping with name and url", where=at)
        unknown = set(item) - {"name", "url", "token_file", "expected", "ca_file"}
        if unknown:
            raise ConfigError(f"unknown key {sorted(map(str, unknown))[0][:40]!r}", where=at,
                              hint="keys: name, url, token_file, expected, ca_file")
        url = _check_url(item.get("url"), f"{at}.url")
        name = item.get("name", urlsplit(url).hostname)
        if not isinstance(name, str) or not name or len(name) > 128:
            raise ConfigError("name must be a string of 1 to 128 characters", where=f"{at}.name")
        if name in seen:
            raise ConfigError(f"the name {name!r} is used twice", where=f"{at}.name")
        seen.add(name)
        token = item.get("token_file")
        if token is not None and (not isinstance(token, str) or not token or len(token) > 4096):
            raise ConfigError("token_file must be a path", where=f"{at}.token_file")
        expected = item.get("expected")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)
                                     or not 0 <= expected <= 64):
            raise ConfigError("expected must be a number of enclaves (0 to 64)", where=f"{at}.expected")
        ca_file = item.get("ca_file")
        if ca_file is not None and (not isinstance(ca_file, str) or not ca_file or len(ca_file) > 4096):
            raise ConfigError("ca_file must be a path", where=f"{at}.ca_file")
        out.append(HostEntry(name, url, token, expected, ca_file))
    return out


def agent_entry(url: str, token_file: str | None = None, ca_file: str | None = None) -> HostEntry:
    """`fleet --agent URL`: one host, named after the URL's host."""
    url = _check_url(url, "--agent")
    return HostEntry(urlsplit(url).hostname or url, url, token_file, None, ca_file)


def load_hosts(path: Path | str) -> list[HostEntry]:
    path = Path(path)
    entries = parse_hosts(read_limited(path, MAX_HOSTS_FILE, "--hosts"), f"--hosts {path}")
    # token and CA files are named relative to the hosts file
    def near(name: str | None) -> str | None:
        return str((path.parent / Path(name).expanduser()).resolve()) if name else None

    return [HostEntry(e.name, e.url, near(e.token_file), e.expected, near(e.ca_file)) for e in entries]


class AgentClient:
    """GETs against one agent; a token (read once) and a timeout for every call. Used by the fleet's
    poll and by a host's dashboard (console/agent/remote.py)."""

    def __init__(self, entry: HostEntry, timeout: float, tokens: dict[str, str]) -> None:
        self.entry = entry
        self.timeout = timeout
        parts = urlsplit(entry.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.token = tokens.get(entry.token_file) if entry.token_file else None
        self._tls: ssl.SSLContext | None = None

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A new connection to the agent (https verified against ca_file, or the system's CAs)."""
        if self.https:
            if self._tls is None:  # loading the CA bundle costs more than a request: once per client
                self._tls = ssl.create_default_context(cafile=self.entry.ca_file)
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout or self.timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str) -> tuple[int, Any]:
        conn = self.connection()
        try:
            conn.request("GET", self.base + path, headers=self.headers)
            resp = conn.getresponse()
            body = resp.read(MAX_ANSWER + 1)
        finally:
            conn.close()
        if len(body) > MAX_ANSWER:
            raise ValueError(f"{path} answered more than {MAX_ANSWER} bytes")
        try:
            return resp.status, json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ValueError(f"{path} did not answer JSON") from None


def _summary(entry: HostEntry, status: dict[str, Any]) -> HostReport:
    enclaves = status.get("enclaves") if isinstance(status.get("enclaves"), list) else []
    enclaves = [e for e in enclaves if isinstance(e, dict)]
    pcr: dict[str, int] = {}
    for e in enclaves:
        verdict = str(e.get("ExpectedPCRs") or "unpinned")
        pcr[verdict] = pcr.get(verdict, 0) + 1
    pool = status.get("cpu_pool") if isinstance(status.get("cpu_pool"), dict) else {}
    instance = status.get("instance_id")
    return HostReport(
        name=entry.name, url=entry.url, reachable=True,
        instance_id=instance if isinstance(instance, str) else None,
        enclaves=enclaves,
        running=sum(1 for e in enclaves if e.get("State") == "RUNNING"),
        expected=entry.expected,
        pcr=pcr,
        free_cpus=len(pool["free"]) if isinstance(pool.get("free"), list) else None,
        pool_cpus=len(pool["pool"]) if isinstance(pool.get("pool"), list) else None,
    )


def poll_host(entry: HostEntry, timeout: float = DEFAULT_TIMEOUT_S, tokens: dict[str, str] | None = None) -> HostReport:
    started = time.monotonic()
    fetch = AgentClient(entry, timeout, tokens or {})
    try:
        code, status = fetch.get("/status")
        if code != 200 or not isinstance(status, dict):
            detail = status.get("error") if isinstance(status, dict) else None
            raise ValueError(f"/status answered {code}" + (f": {str(detail)[:120]}" if detail else ""))
        report = _summary(entry, status)
        code, events = fetch.get("/events?since=7d&event=exited&limit=1")
        if code == 200 and isinstance(events, dict) and isinstance(events.get("events"), list) and events["events"]:
            last = events["events"][-1]
            report.last_exit = last if isinstance(last, dict) else None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        report = HostReport(entry.name, entry.url, reachable=False, expected=entry.expected,
                            error=(str(exc) or type(exc).__name__)[:200])
    report.elapsed_ms = int((time.monotonic() - started) * 1000)
    return report


def read_tokens(entries: list[HostEntry]) -> dict[str, str]:
    """Each distinct token file, read once (mode 0600 checked, as the agent checks its own)."""
    from console.agent.auth import load_token

    return {path: load_token(Path(path)) for path in sorted({e.token_file for e in entries if e.token_file})}


def poll_fleet(entries: list[HostEntry], timeout: float = DEFAULT_TIMEOUT_S,
               concurrency: int = DEFAULT_CONCURRENCY, tokens: dict[str, str] | None = None) -> list[HostReport]:
    """Every host, in the order given; at most ``concurrency`` requests in flight."""
    if not entries:
        return []
    tokens = read_tokens(entries) if tokens is None else tokens
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(entries))), thread_name_prefix="fleet") as pool:
        return list(pool.map(lambda e: poll_host(e, timeout, tokens), entries))


def fleet_json(reports: list[HostReport]) -> dict[str, Any]:
    return {"hosts": [r.to_json() for r in reports]}


def row(report: HostReport) -> list[str]:
    """One table row: name, instance, reachable, running/expected, PCR verdicts, free pool, last exit."""
    if not report.reachable:
        return [report.name, report.instance_id or "-", "UNREACHABLE", "-", "-", "-", (report.error or "")[:60]]
    expected = "-" if report.expected is None else str(report.expected)
    pcr = " ".join(f"{k}:{v}" for k, v in sorted(report.pcr.items())) or "-"
    pool = "-" if report.free_cpus is None else f"{report.free_cpus}/{report.pool_cpus}"
    last = report.last_exit
    exit_text = f"{last.get('name') or last.get('enclave_id')} {last.get('time')}" if last else "-"
    return [report.name, report.instance_id or "-", "yes", f"{report.running}/{expected}", pcr, pool, exit_text]


HEADERS = ["HOST", "INSTANCE", "AGENT", "RUNNING/EXPECTED", "PCRS", "FREE CPUS", "LAST EXIT"]
