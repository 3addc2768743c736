"""The agent's periodic test-sign probe against the real payload, and HTTPS with --tls-cert/--tls-key."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from console.agent.fleet import load_hosts, poll_fleet
from core.ops.lifecycle import Lifecycle
from tests.agent_world import launch as launch_script
from tests.agent_world import script_eif, start_agent, write_world
from tests.conftest import REPO, wait_for
from tests.test_agent import samples
from tests.test_testsign_e2e import launch as launch_payload
from tests.test_testsign_e2e import world  # noqa: F401 - the fixture: the payload EIF on the emulator

pytestmark = pytest.mark.slow


def test_probe_sign_reports_each_enclave(world: tuple[Lifecycle, str], tmp_path: Path) -> None:  # noqa: F811
    lc, eif = world
    launch_payload(lc, eif, "signer")
    launch_script(lc, script_eif(lc, tmp_path, "mute"), "mute")  # answers nothing on the payload's port
    agent = start_agent(tmp_path, "--probe-sign", "5")
    try:
        def probe() -> dict[str, float] | None:
            _, _, body = agent.request("GET", "/metrics")
            got = {s.labels["name"]: s.value for s in samples(body.decode()).get("nitrodeck_testsign_last_ok", [])}
            return got if set(got) == {"signer", "mute"} else None

        assert wait_for(probe, timeout=120) == {"signer": 1.0, "mute": 0.0}
    finally:
        agent.stop()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitrodeck agent test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "agent.crt", tmp / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    cert, key = self_signed(tmp_path)
    agent = start_agent(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert agent.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(agent.host, agent.port, context=ctx, timeout=20)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and b'"ok": true' in resp.read()
        conn.close()
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            agent.request("GET", "/healthz")  # plain HTTP to a TLS port gets no answer
        assert agent.proc.poll() is None  # and does not hurt the agent
        # the fleet view verifies an https agent against the hosts file's ca_file (relative to the file)
        hosts = tmp_path / "hosts.yaml"
        hosts.write_text(f"- {{name: pinned, url: '{agent.url}', ca_file: agent.crt}}\n"
                         f"- {{name: system-cas, url: '{agent.url}'}}\n")
        reports = {r.name: r for r in poll_fleet(load_hosts(hosts), tokens={})}
        assert reports["pinned"].reachable and reports["pinned"].instance_id == "i-0agent0000000001"
        assert not reports["system-cas"].reachable and "CERTIFICATE_VERIFY_FAILED" in (reports["system-cas"].error or "")
    finally:
        agent.stop()
    res = subprocess.run([sys.executable, "-m", "console", "serve", "--tls-cert", str(cert)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "give both --tls-cert and --tls-key" in res.stderr
