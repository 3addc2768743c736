"""`nitrodeck serve` against the emulator: real enclaves, a real HTTP server process, a real Prometheus parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from console.agent.auth import AgentConfigError, authorized, is_loopback, load_token, parse_listen
from console.agent.server import ENDPOINTS
from core.ops.lifecycle import Lifecycle
from core.ops.resources import gather
from tests.agent_world import launch, script_eif, start_agent, write_world
from tests.conftest import REPO, is_root, require

pytestmark = pytest.mark.slow

# The published EMF structure (CloudWatch "Specification: Embedded metric format"), as a JSON Schema.
EMF_SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r".*[^\s].*"},
                            "Dimensions": {
                                "type": "array",
                                "items": {"type": "array", "maxItems": 30,
                                          "items": {"type": "string", "minLength": 1, "maxLength": 250}},
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": [
                                            "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes",
                                            "Megabytes", "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits",
                                            "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
                                            "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
                                            "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
                                            "Gigabits/Second", "Terabits/Second", "Count/Second", "None"]},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def emf_valid(record: dict) -> None:
    """Schema, then the rules a schema cannot say: every dimension and metric named is a root member,
    dimension values are strings, metric values are numbers (or up to 100 of them)."""
    jsonschema.validate(record, EMF_SCHEMA)
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dims in directive["Dimensions"]:
            for dim in dims:
                assert isinstance(record.get(dim), str), dim
        for metric in directive["Metrics"]:
            value = record.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values), metric


@pytest.fixture
def host(nd_home: Path, tmp_path: Path) -> tuple[Lifecycle, dict[str, str]]:
    """Three emulated enclaves: "good" pinned and matching, "bad" pinned to other PCRs, "dbg" in debug mode."""
    write_world(nd_home)
    lc = Lifecycle()
    # each enclave is named as its EIF's image, so its pin is found by name (describe) and by image (journal)
    good = script_eif(lc, tmp_path, "good")
    bad = script_eif(lc, tmp_path, "bad", "echo bad\nexec sleep 300\n")
    other = script_eif(lc, tmp_path, "other", "echo other\nexec sleep 300\n")
    ids = {"good": launch(lc, good, "good"), "bad": launch(lc, bad, "bad"), "dbg": launch(lc, good, "dbg", debug=True)}
    lc.expected.pin("good", lc.describe_eif(good).measurements)
    lc.expected.pin("bad", lc.describe_eif(other).measurements)
    return lc, ids


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: a counter family's samples end in _total
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_match_the_emulated_host(host: tuple[Lifecycle, dict[str, str]], tmp_path: Path) -> None:
    lc, ids = host
    agent = start_agent(tmp_path)
    try:
        status, headers, body = agent.request("GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        got = samples(body.decode())
    finally:
        agent.stop()
    enclaves = {e.enclave_id: e for e in lc.describe()}
    assert set(enclaves) == set(ids.values())

    def by_id(family: str) -> dict[str, float]:
        return {s.labels["enclave_id"]: s.value for s in got.get(family, [])}

    info = {s.labels["enclave_id"]: s.labels for s in got["nitrodeck_enclave_info"]}
    for enclave_id, e in enclaves.items():
        assert info[enclave_id]["name"] == e.name
        assert info[enclave_id]["pcr0"] == e.measurements.pcr0
        assert info[enclave_id]["debug"] == ("true" if e.debug_mode else "false")
    assert by_id("nitrodeck_enclave_running") == {i: 1.0 for i in enclaves}
    assert by_id("nitrodeck_enclave_cpus") == {i: float(e.cpu_count) for i, e in enclaves.items()}
    assert by_id("nitrodeck_enclave_memory_bytes") == {i: e.memory_mib * 1024.0**2 for i, e in enclaves.items()}
    uptimes = by_id("nitrodeck_enclave_uptime_seconds")
    assert set(uptimes) == set(enclaves) and all(0 < v < 600 for v in uptimes.values())
    # 1 match, 0 mismatch, no sample for the debug-mode enclave (its PCRs are zeros, nothing to compare)
    assert by_id("nitrodeck_enclave_pcr_match") == {ids["good"]: 1.0, ids["bad"]: 0.0}

    resources = gather(list(enclaves.values()), lc.backend)
    pool = {s.labels["state"]: s.value for s in got["nitrodeck_pool_cpus"]}
    assert pool == {"free": float(len(resources.cpus.free)), "held": 6.0}
    pages = {(s.labels["size"], s.labels["node"], s.labels["state"]): s.value for s in got["nitrodeck_hugepages_bytes"]}
    for p in resources.hugepages:
        size = f"{p.size_kb // 1024**2}G" if p.size_kb % 1024**2 == 0 else f"{p.size_kb // 1024}M"
        node = "" if p.node is None else str(p.node)
        assert pages[(size, node, "total")] == p.total * p.size_kb * 1024.0
        assert pages[(size, node, "free")] == p.free * p.size_kb * 1024.0
        assert pages[(size, node, "held")] == p.held_by_enclaves * p.size_kb * 1024.0
    assert any(v > 0 for (_, _, state), v in pages.items() if state == "held")
    assert [s.value for s in got["nitrodeck_scrape_errors_total"]] == [0.0]
    assert "nitrodeck_testsign_last_ok" not in got  # the probe is off unless --probe-sign


def test_status_and_enclaves_are_the_cli_shapes(host: tuple[Lifecycle, dict[str, str]], tmp_path: Path) -> None:
    lc, ids = host
    agent = start_agent(tmp_path)
    try:
        status = agent.get_json("/status")
        enclaves = agent.get_json("/enclaves")
        health = agent.get_json("/healthz")
    finally:
        agent.stop()
    cli = json.loads(subprocess.run([sys.executable, "-m", "console", "status", "--json"], cwd=REPO,
                                    capture_output=True, text=True, timeout=60, check=True).stdout)
    assert set(status) == set(cli)
    assert status["read_only"] is True  # the agent's Lifecycle, whatever the flags
    assert status["instance_id"] == cli["instance_id"] == "i-0agent0000000001"
    assert {e["EnclaveID"]: e["ExpectedPCRs"] for e in status["enclaves"]} == {
        ids["good"]: "match", ids["bad"]: "mismatch", ids["dbg"]: "debug"}
    # the agent serves what status gathered, which asks describe-enclaves --metadata (image, metadata)
    describe = json.loads(subprocess.run([sys.executable, "-m", "console", "describe-enclaves", "--metadata"], cwd=REPO,
                                         capture_output=True, text=True, timeout=60, check=True).stdout)
    assert enclaves == describe
    assert health["ok"] is True and health["last_error"] is None


def test_no_method_but_get_and_head_does_anything(host: tuple[Lifecycle, dict[str, str]], tmp_path: Path) -> None:
    lc, ids = host
    before = sorted(e.enclave_id for e in lc.describe())
    agent = start_agent(tmp_path)
    try:
        for path in [*ENDPOINTS, "/", "/enclaves/" + ids["good"], "/terminate", "/nope"]:
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"):
                status, headers, _ = agent.request(method, path, body=b'{"all": true}')
                assert status == 405, (method, path, status)
                assert headers["Allow"] == "GET, HEAD"
            status, headers, body = agent.request("HEAD", path)
            assert body == b"" and status in (200, 404, 503)  # 503: no journal in this build
        assert agent.proc.poll() is None
    finally:
        agent.stop()
    assert sorted(e.enclave_id for e in lc.describe()) == before
    assert not (Path(os.environ["NITRODECK_HOME"]) / "audit.log").exists() or "terminate" not in (
        Path(os.environ["NITRODECK_HOME"]) / "audit.log").read_text()


def test_emf_lines_follow_the_published_structure(host: tuple[Lifecycle, dict[str, str]], tmp_path: Path) -> None:
    lc, ids = host
    agent = start_agent(tmp_path, "--emf", "--emf-interval", "1", stdout=subprocess.PIPE)
    try:
        assert agent.proc.stdout is not None
        lines = [agent.proc.stdout.readline() for _ in range(8)]  # two rounds of 1 host + 3 enclave records
    finally:
        agent.stop()
    records = [json.loads(line) for line in lines]
    for record in records:
        emf_valid(record)
    hosts = [r for r in records if "EnclaveName" not in r]
    assert hosts and all(r["InstanceId"] == "i-0agent0000000001" and r["EnclavesRunning"] == 3 for r in hosts)
    per = {r["EnclaveName"]: r for r in records if "EnclaveName" in r}
    assert set(per) == {"good", "bad", "dbg"}
    assert per["good"]["EnclavePcrMatch"] == 1 and per["bad"]["EnclavePcrMatch"] == 0
    assert "EnclavePcrMatch" not in per["dbg"]
    assert per["good"]["EnclaveMemoryBytes"] == next(e.memory_mib for e in lc.describe() if e.name == "good") * 1024**2


# --- the token ---------------------------------------------------------------------------------------------


def test_token_file_rules(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    token.chmod(0o644)
    with pytest.raises(AgentConfigError, match="group or others") as err:
        load_token(token)
    assert err.value.code == "ND-AGENT-CONFIG" and "chmod 600" in (err.value.hint or "")
    token.chmod(0o600)
    assert load_token(token) == "0123456789abcdef0123"
    token.write_text("short")
    with pytest.raises(AgentConfigError, match="at least"):
        load_token(token)
    token.write_bytes(b"x" * 5000)
    with pytest.raises(AgentConfigError, match="larger"):
        load_token(token)
    with pytest.raises(AgentConfigError, match="cannot open"):
        load_token(tmp_path / "missing")
    assert authorized("Bearer 0123456789abcdef0123", "0123456789abcdef0123")
    assert not authorized("Bearer 0123456789abcdef0124", "0123456789abcdef0123")
    assert not authorized(None, "0123456789abcdef0123") and authorized(None, None)
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_listen_parser_never_crashes(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except AgentConfigError as err:
        assert err.where == "--listen"
        return
    assert 0 <= port <= 65535 and host


def test_listen_forms() -> None:
    assert parse_listen("127.0.0.1:9181") == ("127.0.0.1", 9181)
    assert parse_listen(":80") == ("127.0.0.1", 80)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen("0.0.0.0") == ("0.0.0.0", 9181)
    with pytest.raises(AgentConfigError):
        parse_listen("host:99999")


def _netns() -> str:
    require(is_root() and shutil.which("ip") is not None, "network namespaces need root and iproute2")
    name = f"ndag-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "nd0", "type", "veth", "peer", "name", "nd1"],
                ["ip", "addr", "add", "10.201.0.1/24", "dev", "nd0"], ["ip", "link", "set", "nd0", "up"],
                ["ip", "link", "set", "nd1", "up"]):
        subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
    return name


CLIENT = """
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]} if sys.argv[2] else {})
try:
    with urllib.request.urlopen(req, timeout=20) as resp:
        print(resp.status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def test_token_required_off_loopback(host: tuple[Lifecycle, dict[str, str]], tmp_path: Path) -> None:
    ns = _netns()
    try:
        inside = ["ip", "netns", "exec", ns]
        # no token: it refuses to start, with a typed error and no socket
        res = subprocess.run([*inside, sys.executable, "-m", "console", "serve", "--listen", "0.0.0.0:9181"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "refusing to listen on 0.0.0.0 without a bearer token" in res.stderr
        assert "Traceback" not in res.stderr
        token = tmp_path / "token"
        token.write_text("s3cr3t-t0ken-0123456789\n")
        token.chmod(0o600)
        agent = start_agent(tmp_path, "--token-file", str(token), listen="0.0.0.0:9181", prefix=inside)
        try:
            def get(path: str, tok: str = "") -> int:
                out = subprocess.run([*inside, sys.executable, "-c", CLIENT, f"http://10.201.0.1:9181{path}", tok],
                                     capture_output=True, text=True, timeout=60, check=True)
                return int(out.stdout.strip())

            for path in ENDPOINTS[:4]:
                assert get(path) == 401
            assert get("/status", "wrong-token-0123456789") == 401
            assert get("/status", "s3cr3t-t0ken-0123456789") == 200
            out = subprocess.run([*inside, sys.executable, "-c",
                                  "import urllib.request,sys;print(urllib.request.urlopen(urllib.request.Request("
                                  "'http://10.201.0.1:9181/metrics',headers={'Authorization':'Bearer '+sys.argv[1]}),"
                                  "timeout=20).read().decode())", "s3cr3t-t0ken-0123456789"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            refused = samples(out)["nitrodeck_agent_unauthorized_requests_total"]
            assert [s.value for s in refused] == [5.0]  # four without a token, one with a wrong one
        finally:
            agent.stop()
        assert "s3cr3t" not in agent.stderr.read_text()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_agent_refuses_a_readable_token_file(nd_home: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-t0ken-0123456789\n")
    token.chmod(0o640)
    res = subprocess.run([sys.executable, "-m", "console", "serve", "--token-file", str(token)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "mode 0640" in res.stderr and "Traceback" not in res.stderr



def test_a_failing_refresh_is_counted_and_the_last_state_kept(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from console.agent.state import HostState
    from core.backends.registry import select_backend
    from core.ops.metrics import families

    write_world(nd_home)
    state = HostState(Lifecycle(select_backend("emulator"), read_only=True))
    good = state.refresh()
    assert good.error is None and good.status is not None
    # the real backend on a machine without nitro-cli: describe-enclaves cannot run
    monkeypatch.setenv("PATH", str(nd_home / "empty"))
    state.lifecycle = Lifecycle(select_backend("real"), read_only=True)
    bad = state.refresh()
    assert bad.status is good.status and bad.error and "nitro-cli" in bad.error
    assert state.counters.scrape_errors == 1
    got = {f.name: f for f in families(*state.current())}
    assert [s.value for s in got["nitrodeck_scrape_errors"].samples if s.name.endswith("_total")] == [1]
    with pytest.raises(ValueError, match="read-only"):
        HostState(Lifecycle(select_backend("emulator")))
