"""deploy/nitrodeck.yaml: cfn-lint passes, and what the template wires is what nitrodeck reads
(the healthCheck is a real `up` flag, the task's environment is a valid `up` configuration, the
home volume is where NITRODECK_HOME points, one enclave per host in placement and deployments)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core.up.config import load_config
from tests.conftest import REPO, require

TEMPLATE = REPO / "deploy" / "nitrodeck.yaml"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref X -> {"Ref": X}, !Sub s -> {"Fn::Sub": s}, ...)."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


def cfn_lint() -> str:
    found = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    require(found is not None, "cfn-lint is not installed (pip install -e '.[test]')")
    assert found is not None
    return found


def test_cfn_lint_passes() -> None:
    proc = subprocess.run([cfn_lint(), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    # the lint really reads the file: a task definition without its container is an error
    doc = TEMPLATE.read_text().replace("      ContainerDefinitions:\n", "      ContainerDefinitionz:\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text(doc)
    proc = subprocess.run([cfn_lint(), str(broken)], capture_output=True, text=True, timeout=300)
    # cfn-lint's exit status is a bit mask (2 errors, 4 warnings, 8 informational): exactly one error here
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("E3002 Additional properties are not allowed ('ContainerDefinitionz' was unexpected.")


def _container() -> dict[str, Any]:
    return template()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]  # type: ignore[no-any-return]


def test_launch_template_enables_enclaves_and_joins_the_cluster() -> None:
    data = template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["EnclaveOptions"] == {"Enabled": True}
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2  # the container reaches IMDS
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    for line in (
        "systemctl enable --now nitro-enclaves-allocator.service",
        "memory_mib: ${AllocatorMemoryMiB}",
        "ECS_CLUSTER=${Cluster}",
        'ECS_INSTANCE_ATTRIBUTES={"nitro-enclaves":"true"}',
        "install -d -m 0700 /var/lib/nitrodeck",
    ):
        assert line in script


def test_health_check_is_ups_readiness_probe() -> None:
    check = _container()["HealthCheck"]
    assert check["Command"][:2] == ["CMD", "nitrodeck"] and check["Command"][2:] == ["up", "--check-ready"]
    # the flag exists and, with nothing running, says "not ready" with exit 1
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"nd-hc-{os.getpid()}"
    # the container's environment, as ECS gives it to the health check too
    env = {**os.environ, "NITRODECK_HOME": str(home), "NITRODECK_UP_NAME": "signer",
           "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/abc"}
    proc = subprocess.run(
        [sys.executable, "-m", "console", "up", "--check-ready"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 1 and proc.stdout.startswith("not ready:") and "signer.ready" in proc.stdout


def test_task_environment_is_a_valid_up_configuration() -> None:
    params = template()["Parameters"]
    env: dict[str, str] = {}
    for item in _container()["Environment"]:
        value = item["Value"]
        if isinstance(value, dict):  # a !Ref: the parameter's default, or what the operator passes
            ref = value["Ref"]
            value = {"AWS::Region": "us-east-1", "KmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/"
                     "1234abcd-12ab-34cd-56ef-1234567890ab", "CiphertextB64": base64.b64encode(b"\1" * 180).decode()
                     }.get(ref, params.get(ref, {}).get("Default"))
        env[item["Name"]] = str(value)
    cfg = load_config(None, env={**env, "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/abc"})
    assert (cfg.source, cfg.cpu_count, cfg.memory_mib, cfg.cid) == ("docker", 2, 2634, 16)
    assert cfg.memory_mib <= params["AllocatorMemoryMiB"]["Default"]
    assert cfg.cpu_count <= params["AllocatorCpuCount"]["Default"]


def test_home_is_a_host_volume_and_exec_is_enabled() -> None:
    res = template()["Resources"]
    task = res["TaskDefinition"]["Properties"]
    container = _container()
    home = {e["Name"]: e["Value"] for e in container["Environment"]}["NITRODECK_HOME"]
    mounts = {m["ContainerPath"]: m["SourceVolume"] for m in container["MountPoints"]}
    volumes = {v["Name"]: v["Host"]["SourcePath"] for v in task["Volumes"]}
    assert set(mounts.values()) == set(volumes)
    assert volumes[mounts[home]] == "/var/lib/nitrodeck"
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    assert res["Service"]["Properties"]["EnableExecuteCommand"] is True
    exec_actions = res["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Action"]
    assert sorted(exec_actions) == sorted(
        f"ssmmessages:{a}" for a in ("CreateControlChannel", "CreateDataChannel", "OpenControlChannel", "OpenDataChannel")
    )


def test_one_enclave_per_host() -> None:
    svc = template()["Resources"]["Service"]["Properties"]
    assert {"Type": "distinctInstance"} in svc["PlacementConstraints"]
    deploy = svc["DeploymentConfiguration"]
    # spare capacity starts new tasks on new hosts first; in place stops the old one first
    assert deploy["MinimumHealthyPercent"] == {"Fn::If": ["SpareCapacity", 100, 0]}
    assert deploy["MaximumPercent"] == {"Fn::If": ["SpareCapacity", 200, 100]}


def test_kms_release_only_with_attestation() -> None:
    policies = template()["Resources"]["TaskRole"]["Properties"]["Policies"]
    kms = next(p for p in policies if p["PolicyName"] == "kms-release")["PolicyDocument"]["Statement"]
    released = set()
    for st in kms:
        if "Fn::If" in st:
            cond, stmt, _ = st["Fn::If"]
            assert cond == "Measured"
            assert stmt["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"] == {"Ref": "ImagePcr0"}
            released |= set(stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]])
        else:
            assert st["Action"] == "kms:DescribeKey"
    assert released == {"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom"}
