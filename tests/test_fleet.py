"""`nitrodeck fleet`: three real agents on 127.0.0.x found through moto's ECS, one killed; the hosts file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.agent.fleet import HostEntry, parse_hosts, poll_fleet
from core.errors import ConfigError
from core.ops.lifecycle import Lifecycle
from tests.agent_world import Agent, launch, script_eif, start_agent, write_world
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def aws_env(moto: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def fleet(env: dict[str, str], *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "console", "fleet", *args, "--json", "--timeout", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_three_agents_through_ecs_one_killed(nd_home: Path, tmp_path: Path, moto_kms: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             scratch_dirs: Callable[..., Path]) -> None:
    for key, value in aws_env(moto_kms).items():
        monkeypatch.setenv(key, value)
    ecs = boto3.client("ecs", endpoint_url=moto_kms)
    cluster = f"fleet-{os.getpid()}"
    ecs.create_cluster(clusterName=cluster)
    # moto's ECS registers only instances its EC2 knows: three parents
    ec2 = boto3.client("ec2", endpoint_url=moto_kms)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instances = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3,
                                                              InstanceType="m5.xlarge")["Instances"]]
    for instance in instances:
        ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=json.dumps(
            {"instanceId": instance, "region": "us-east-1", "accountId": "123456789012"}))
    homes = [nd_home] + [scratch_dirs("ndh-", world=True) for _ in instances[1:]]
    agents: list[Agent] = []
    try:
        for home, instance in zip(homes, instances, strict=True):
            write_world(home, instance)
        lc = Lifecycle()  # nd_home's world: one enclave there
        enclave_id = launch(lc, script_eif(lc, tmp_path, "svc"), "svc")
        for index, home in enumerate(homes):
            env = {**os.environ, "NITRODECK_HOME": str(home)}
            agents.append(start_agent(tmp_path, "--ecs-cluster", cluster, listen=f"127.0.0.{index + 2}:0", env=env))
        attrs = ecs.list_attributes(cluster=cluster, targetType="container-instance")["attributes"]
        assert sorted(a["value"] for a in attrs if a["name"] == "nitrodeck.endpoint") == sorted(a.url for a in agents)

        hosts = {h["name"]: h for h in fleet(dict(os.environ), "--ecs-cluster", cluster)["hosts"]}
        assert set(hosts) == set(instances)
        for agent, instance in zip(agents, instances, strict=True):
            assert hosts[instance]["reachable"] is True and hosts[instance]["url"] == agent.url
            assert hosts[instance]["instance_id"] == instance
        assert [e["EnclaveID"] for e in hosts[instances[0]]["enclaves"]] == [enclave_id]
        assert hosts[instances[0]]["running"] == 1 and hosts[instances[0]]["pcr"] == {"unpinned": 1}
        assert hosts[instances[1]]["enclaves"] == [] and hosts[instances[1]]["free_cpus"] == 8

        agents[1].proc.send_signal(signal.SIGKILL)
        agents[1].proc.wait(timeout=10)
        hosts = {h["name"]: h for h in fleet(dict(os.environ), "--ecs-cluster", cluster)["hosts"]}
        assert hosts[instances[1]]["reachable"] is False and hosts[instances[1]]["error"]
        assert hosts[instances[0]]["reachable"] is True and hosts[instances[2]]["reachable"] is True
    finally:
        for agent in agents:
            agent.stop()


def test_hosts_file_with_tokens_and_a_dead_host(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    token = tmp_path / "fleet.token"
    token.write_text("fleet-token-0123456789abcdef\n")
    token.chmod(0o600)
    agent = start_agent(tmp_path, "--token-file", str(token), listen="127.0.0.5:0")
    try:
        hosts_file = tmp_path / "hosts.yaml"
        hosts_file.write_text(
            f"- name: a\n  url: {agent.url}\n  token_file: fleet.token\n  expected: 2\n"
            f"- name: nobody\n  url: http://127.0.0.6:9\n"
            f"- name: no-token\n  url: {agent.url}\n")
        hosts = {h["name"]: h for h in fleet(dict(os.environ), "--hosts", str(hosts_file))["hosts"]}
        assert hosts["a"]["reachable"] is True and hosts["a"]["expected"] == 2 and hosts["a"]["running"] == 0
        assert hosts["a"]["instance_id"] == "i-0agent0000000001"
        assert hosts["nobody"]["reachable"] is False
        assert hosts["no-token"]["reachable"] is False and "401" in hosts["no-token"]["error"]
        token.chmod(0o644)
        res = subprocess.run([sys.executable, "-m", "console", "fleet", "--hosts", str(hosts_file), "--json"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and json.loads(res.stdout)["error"]["code"] == "ND-AGENT-CONFIG"
    finally:
        agent.stop()


def test_unreachable_hosts_do_not_stall_the_others() -> None:
    # 40 hosts that never answer (a listening socket that never accepts... here: nothing listens) and the
    # pool still returns every row, each as unreachable, in the order given
    entries = [HostEntry(f"h{i}", f"http://127.0.0.{10 + i}:9") for i in range(40)]
    reports = poll_fleet(entries, timeout=1.0, concurrency=8, tokens={})
    assert [r.name for r in reports] == [e.name for e in entries]
    assert not any(r.reachable for r in reports)


def test_hosts_file_errors() -> None:
    with pytest.raises(ConfigError, match="expected a list"):
        parse_hosts(b"name: a\n", "hosts.yaml")
    with pytest.raises(ConfigError, match="not an http"):
        parse_hosts(b"- {name: a, url: 'ftp://x'}\n", "hosts.yaml")
    with pytest.raises(ConfigError, match="used twice"):
        parse_hosts(b"- {name: a, url: 'http://x'}\n- {name: a, url: 'http://y'}\n", "hosts.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_hosts(b"- {name: a, url: 'http://x', tokn: f}\n", "hosts.yaml")
    with pytest.raises(ConfigError, match="larger than"):
        parse_hosts(b"#" * (300 * 1024), "hosts.yaml")
    assert parse_hosts(b"hosts:\n- url: http://10.0.0.1:9181\n", "h") == [HostEntry("10.0.0.1", "http://10.0.0.1:9181")]


_host = st.fixed_dictionaries(
    {"url": st.sampled_from(["http://10.0.0.1:9181", "https://h.example", "ftp://x", "http://", "http://h:99999", 7])},
    optional={"name": st.text(max_size=4) | st.integers(), "expected": st.integers(-2, 70) | st.booleans(),
              "token_file": st.sampled_from(["t", "", 5]), "ca_file": st.sampled_from(["ca.pem", ""]),
              "x": st.none()},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.lists(_host, max_size=4).map(lambda hosts: json.dumps(hosts).encode())))
def test_hosts_parser_accepts_only_well_formed_hosts(data: bytes) -> None:
    try:
        hosts = parse_hosts(data, "hosts.yaml")
    except ConfigError as err:
        assert err.where and err.where.startswith("hosts.yaml")
        return
    # what it accepted is what the fleet can poll: unique names, http(s) URLs with a host, sane counts
    names = [h.name for h in hosts]
    assert len(set(names)) == len(names) and all(isinstance(n, str) and 1 <= len(n) <= 128 for n in names)
    for host in hosts:
        parts = urlsplit(host.url)
        assert parts.scheme in ("http", "https") and parts.hostname and not host.url.endswith("/")
        assert host.expected is None or (type(host.expected) is int and 0 <= host.expected <= 64)
        assert host.token_file is None or (isinstance(host.token_file, str) and host.token_file)


async def test_fleet_tui_rows_and_drill_down(nd_home: Path, tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from console.agent.fleet_app import FleetApp

    write_world(nd_home)
    lc = Lifecycle()
    enclave_id = launch(lc, script_eif(lc, tmp_path, "svc"), "svc")
    agent = start_agent(tmp_path, listen="127.0.0.7:0")
    entries = [HostEntry("parent-a", agent.url, expected=2), HostEntry("parent-b", "http://127.0.0.8:9")]
    try:
        app = FleetApp(lambda: poll_fleet(entries, timeout=2.0, tokens={}), every=60)
        async with app.run_test(size=(160, 40)) as pilot:
            hosts = app.query_one("#hosts", DataTable)
            for _ in range(100):
                await pilot.pause(0.1)
                if hosts.row_count == 2:
                    break
            rows = [hosts.get_row_at(i) for i in range(2)]
            assert rows[0][:4] == ["parent-a", "i-0agent0000000001", "yes", "1/2"]
            assert rows[1][:3] == ["parent-b", "-", "UNREACHABLE"]
            assert "1 unreachable" in app.sub_title
            # the highlighted host's enclaves show below (Enter opens its dashboard: test_fleet_drill.py)
            await pilot.pause(0.2)
            enclaves = app.query_one("#host-enclaves", DataTable)
            assert enclaves.row_count == 1 and enclaves.get_row_at(0)[:2] == ["svc", enclave_id]
    finally:
        agent.stop()
