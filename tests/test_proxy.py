"""core/proxy.py and `nitrodeck proxy`: allowlist semantics, vsock-proxy's messages, a real relay."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channel.proxy import (
    NOT_ALLOWED,
    AllowEntry,
    ProxyError,
    VsockProxy,
    check_allowlist,
    load_allowlist,
)
from core.channel.vsock import Transport
from core.errors import NitrodeckError
from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent


class EchoServer:
    """TCP on 127.0.0.1 that upper-cases what it receives, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        with conn:
            try:
                conn.settimeout(5)
                # hold each connection a moment so concurrent ones overlap if the proxy lets them
                self.stop.wait(0.05)
                try:
                    while data := conn.recv(4096):
                        conn.sendall(data.upper())
                except OSError:
                    pass
            finally:
                # count down before the close: the proxy frees its worker only after it sees this
                # close, so a relay it starts next can never be counted while this one still is
                with self.lock:
                    self.active -= 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _exchange(enclave: Transport, port: int, payload: bytes) -> bytes:
    sock = enclave.connect(3, port, timeout=5)
    with sock:
        sock.settimeout(5)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
    return out


def test_relay_from_enclave_to_tcp(tmp_path: Path, echo: EchoServer) -> None:
    vdir = tmp_path / "v"
    parent = Transport(3, vdir)
    enclave = Transport(16, vdir)
    allow = [AllowEntry("127.0.0.1", echo.port)]
    with VsockProxy(8000, "127.0.0.1", echo.port, transport=parent, allowlist=allow, workers=2) as proxy:
        results: list[bytes] = []
        threads = [
            threading.Thread(
                target=lambda i=i: results.append(_exchange(enclave, 8000, f"hello {i} ".encode() * 500))
            )
            for i in range(5)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert sorted(results) == sorted(f"HELLO {i} ".encode() * 500 for i in range(5))
        assert proxy.connections == 5
        assert 1 <= echo.max_active <= 2  # -w 2: never more than two relays at once


def test_ipv6_only_relay(tmp_path: Path) -> None:
    """-6: the remote is reached over IPv6 (here ::1), the allowlist names it literally."""
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        require(False, "no IPv6 loopback on this machine")
    port = server.getsockname()[1]
    server.settimeout(10)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"v6:" + conn.recv(100))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with VsockProxy(
        8010, "::1", port, transport=Transport(3, tmp_path), allowlist=[AllowEntry("::1", port)], ip_version=6
    ):
        sock = Transport(16, tmp_path).connect(3, 8010, timeout=5)
        with sock:
            sock.settimeout(10)
            sock.sendall(b"hi")
            assert sock.recv(100) == b"v6:hi"
    thread.join(5)
    server.close()
    with pytest.raises(ProxyError):
        # -4 cannot resolve an IPv6 literal to anything allowlisted under another name
        check_allowlist("::1", port, [AllowEntry("localhost", port)], ip_version=4)


def test_allowlist_refusal_and_resolved_match() -> None:
    with pytest.raises(ProxyError) as info:
        check_allowlist("127.0.0.1", 443, [AllowEntry("127.0.0.1", 444), AllowEntry("127.0.0.2", 443)])
    assert info.value.message == NOT_ALLOWED
    assert info.value.vsock_proxy_line() == f'Error: "{NOT_ALLOWED}"'
    # literal address match
    check_allowlist("localhost", 443, [AllowEntry("localhost", 443)])
    # resolved-IP match: the allowlist names a host, the remote is its IP
    check_allowlist("127.0.0.1", 8443, [AllowEntry("localhost", 8443)], ip_version=4)
    with pytest.raises(ProxyError):
        check_allowlist("127.0.0.1", 8443, [AllowEntry("localhost", 8444)], ip_version=4)


def test_proxy_refuses_target_outside_allowlist(tmp_path: Path) -> None:
    cfg = tmp_path / "vsock-proxy.yaml"
    cfg.write_text(yaml.safe_dump({"allowlist": [{"address": "localhost", "port": 443}]}))
    proxy = VsockProxy(8000, "127.0.0.2", 443, transport=Transport(3, tmp_path / "v"), config=cfg)
    with pytest.raises(ProxyError, match="not allowed"):
        proxy.start()
    assert not (tmp_path / "v" / "3" / "8000.sock").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Could not open the file"),
        ("allowlist: [unclosed", "Bad yaml format"),
        ("other: 1\n", "No allowlist field"),
        ("allowlist:\n", "No allowlist field"),
        ("allowlist: {address: 1.2.3.4, port: 443}\n", "No allowlist field"),
        ("allowlist:\n- {port: 443}\n", "No address field"),
        ("allowlist:\n- just-a-host\n", "No address field"),
        ("allowlist:\n- {address: 1.2.3.4}\n", "No port field or invalid type"),
        ("allowlist:\n- {address: 1.2.3.4, port: '443'}\n", "No port field or invalid type"),
        ("allowlist:\n- {address: 1.2.3.4, port: 70000}\n", "Bad yaml format"),
    ],
)
def test_config_errors(tmp_path: Path, content: str | None, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    if content is not None:
        cfg.write_text(content)
    with pytest.raises(ProxyError) as info:
        load_allowlist(cfg)
    assert info.value.message == message


def _cli(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NITRODECK_HOME=str(home), NITRODECK_BACKEND="emulator")
    return subprocess.run(
        [sys.executable, "-m", "console", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_refusal_matches_vsock_proxy(nd_home: Path) -> None:
    cfg = nd_home / "allow.yaml"
    cfg.write_text("allowlist:\n- {address: kms.eu-west-1.amazonaws.com, port: 443}\n")
    res = _cli(nd_home, "proxy", "8000", "127.0.0.1", "443", "--config", str(cfg))
    assert res.returncode == 1
    assert f'Error: "{NOT_ALLOWED}"' in res.stderr
    # default config under the emulator: <home>/emulator/etc/vsock-proxy.yaml, created from the list
    # nitro-cli ships (the regional KMS endpoints, all on 443; port 8443 is none of them, so no entry
    # needs resolving here)
    res = _cli(nd_home, "proxy", "8000", "127.0.0.1", "8443")
    assert res.returncode == 1 and f'Error: "{NOT_ALLOWED}"' in res.stderr
    shipped = load_allowlist(nd_home / "emulator" / "etc" / "vsock-proxy.yaml")
    assert len(shipped) == 76 and all(e.port == 443 and e.address.startswith(("kms.", "kms-fips.")) for e in shipped)
    assert AllowEntry("kms.us-east-1.amazonaws.com", 443) in shipped
    # a missing explicit --config is vsock-proxy's error
    res = _cli(nd_home, "proxy", "8000", "127.0.0.1", "443", "--config", str(nd_home / "absent.yaml"))
    assert res.returncode == 1 and 'Error: "Error at checking the allowlist: Could not open the file"' in res.stderr
    res = _cli(nd_home, "proxy", "-w", "0", "8000", "127.0.0.1", "443", "--config", str(cfg))
    assert res.returncode == 1 and 'Error: "Number of workers must not be 0"' in res.stderr
    # numbers vsock-proxy cannot parse: its messages, exit 1, checked before the allowlist
    for argv, message in (
        (("-w", "many", "8000", "127.0.0.1", "443"), "Number of workers is not valid"),
        (("8000", "127.0.0.1", "65536"), "Remote port is not valid"),
        (("x", "127.0.0.1", "443"), "Local port is not valid"),
    ):
        res = _cli(nd_home, "proxy", *argv, "--config", str(cfg))
        assert (res.returncode, res.stderr.strip()) == (1, f'Error: "{message}"')
    res = _cli(nd_home, "proxy", "-4", "-6", "8000", "127.0.0.1", "443")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


def test_remote_is_resolved_before_the_allowlist_is_read() -> None:
    """proxy.rs check_allowlist resolves the remote first: a remote that cannot be resolved fails even when
    it is allowlisted by name, and entries after a match are never looked at."""
    with pytest.raises(ProxyError) as info:
        check_allowlist("a..b", 443, [{"port": 443}, AllowEntry("a..b", 443)])
    assert info.value.message == "Error at checking the allowlist: Could not parse domain name"
    check_allowlist("localhost", 443, [AllowEntry("localhost", 443), {"port": "not checked"}])
    with pytest.raises(ProxyError) as info:
        check_allowlist("localhost", 443, [{"port": 443}, AllowEntry("localhost", 443)])
    assert info.value.message == "Error at checking the allowlist: No address field"
    # the port is cast to u16 as vsock-proxy does (`as u16` wraps)
    check_allowlist("localhost", 443, [{"address": "localhost", "port": 443 + 65536}])


def test_cli_relays_until_sigterm(nd_home: Path, echo: EchoServer) -> None:
    etc = nd_home / "emulator" / "etc"
    etc.mkdir(parents=True)
    (etc / "vsock-proxy.yaml").write_text(f"allowlist:\n- {{address: localhost, port: {echo.port}}}\n")
    env = dict(os.environ, NITRODECK_HOME=str(nd_home), NITRODECK_BACKEND="emulator")
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "proxy", "-4", "8001", "127.0.0.1", str(echo.port)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "vsock port 8001" in line, line
        enclave = Transport(20, nd_home / "emulator" / "vsock")
        assert _exchange(enclave, 8001, b"via the cli") == b"VIA THE CLI"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: (
            st.lists(kids, max_size=4)
            | st.dictionaries(st.sampled_from(["allowlist", "address", "port", "x"]), kids, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_fuzz_allowlist_documents(doc: object) -> None:
    from core.channel.proxy import parse_allowlist

    try:
        entries = parse_allowlist(doc)
    except NitrodeckError:
        return
    assert all(isinstance(e.address, str) and 0 <= e.port <= 65535 for e in entries)


def test_cli_defaults_match_vsock_proxy() -> None:
    from console.cli import build_parser

    args = build_parser().parse_args(["proxy", "8000", "kms.us-east-1.amazonaws.com", "443"])
    assert (args.num_workers, args.ip_version, args.config) == ("4", None, None)  # -w 4, mixed mode
    args = build_parser().parse_args(["proxy", "--num_workers", "7", "-6", "8000", "h", "443"])
    assert (args.num_workers, args.ip_version) == ("7", 6)


def test_a_second_proxy_on_a_port_in_use_fails_and_the_first_keeps_working(tmp_path: Path, echo: EchoServer) -> None:
    """Issue 9 item 6: the second proxy 'succeeded' by taking the socket file, and when it stopped
    port 8000 was gone for everyone."""
    vdir = tmp_path / "v"
    parent = Transport(3, vdir)
    enclave = Transport(16, vdir)
    allow = [AllowEntry("127.0.0.1", echo.port)]
    with VsockProxy(8000, "127.0.0.1", echo.port, transport=parent, allowlist=allow) as first:
        second = VsockProxy(8000, "127.0.0.1", echo.port, transport=parent, allowlist=allow)
        with pytest.raises(ProxyError) as info:
            second.start()
        assert "Address already in use" in info.value.message
        second.stop()
        assert _exchange(enclave, 8000, b"still here") == b"STILL HERE"
        assert first.connections == 1
