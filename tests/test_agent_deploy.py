"""deploy/: the agent's systemd unit and its ECS sidecar say what `nitrodeck serve` accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

from console.cli import build_parser
from tests.conftest import REPO, require
from tests.test_deploy_template import template

UNIT = REPO / "deploy" / "nitrodeck-agent.service"


def serve_args(argv: list[str]):  # type: ignore[no-untyped-def]
    """argv after the program name, parsed by nitrodeck's own parser."""
    return build_parser("serve").parse_args(argv)


def test_systemd_unit_runs_a_tokened_agent(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/local/bin/nitrodeck"
    args = serve_args(argv[1:])
    assert args.command == "serve" and args.backend == "real"
    assert args.listen == "0.0.0.0:9181" and str(args.token_file) == "/etc/nitrodeck/agent.token"
    assert service["User"] != "root" and service["NoNewPrivileges"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert "NITRODECK_HOME=/var/lib/nitrodeck" in service["Environment"]
    # systemd itself accepts the unit (with the binary where this checkout has it)
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze (systemd) is not installed")
    copy = tmp_path / "nitrodeck-agent.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/nitrodeck", str(shutil.which("nitrodeck") or "/bin/true")))
    res = subprocess.run([str(analyze), "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_ecs_sidecar_runs_the_agent_with_the_stacks_token() -> None:
    doc = template()
    containers = {c["Name"]: c for c in doc["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]}
    agent = containers["agent"]
    assert agent["Essential"] is False and containers["signer"]["Essential"] is True
    script = agent["Command"][0]
    assert agent["EntryPoint"] == ["/bin/sh", "-c"] and script.startswith("umask 077 && ")
    argv = shlex.split(script.split("exec ", 1)[1])
    assert argv[0] == "nitrodeck"
    args = serve_args(argv[1:])
    assert args.listen == "0.0.0.0:9181" and str(args.token_file) == "/tmp/agent.token"
    assert args.emf is True and args.ecs_cluster == "$NITRODECK_AGENT_CLUSTER"
    env = {e["Name"]: e["Value"] for e in agent["Environment"]}
    assert env["NITRODECK_AGENT_CLUSTER"] == {"Ref": "Cluster"}
    assert agent["Secrets"] == [{"Name": "NITRODECK_AGENT_TOKEN", "ValueFrom": {"Ref": "AgentToken"}}]
    assert agent["PortMappings"] == [{"ContainerPort": 9181, "HostPort": 9181, "Protocol": "tcp"}]
    # the same journal and sockets as the signer
    signer_mounts = {m["SourceVolume"]: m["ContainerPath"] for m in containers["signer"]["MountPoints"]}
    for mount in agent["MountPoints"]:
        assert signer_mounts[mount["SourceVolume"]] == mount["ContainerPath"]
    res = doc["Resources"]
    # the execution role may read exactly the token; the task role may publish the endpoint
    exec_policy = res["TaskExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert exec_policy == {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "AgentToken"}}
    endpoint = next(p for p in res["TaskRole"]["Properties"]["Policies"] if p["PolicyName"] == "agent-endpoint")
    actions = {a for st in endpoint["PolicyDocument"]["Statement"] for a in st["Action"]}
    assert actions == {"ecs:ListContainerInstances", "ecs:ListAttributes", "ecs:DescribeContainerInstances",
                       "ecs:PutAttributes"}
    assert res["AgentIngress"]["Condition"] == "AgentReachable" and res["AgentIngress"]["Properties"]["FromPort"] == 9181
