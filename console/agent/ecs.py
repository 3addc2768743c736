"""Agents find each other through ECS: each publishes its URL as the attribute ``nitrodeck.endpoint`` on
its container instance, and `nitrodeck fleet --ecs-cluster` lists them. Nothing else is stored anywhere.

The agent's container instance is the one whose EC2 instance ID is this host's (nitro-cli's instance ID,
or the emulator's); ``NITRODECK_ECS_CONTAINER_INSTANCE`` names it outright where listing is not allowed.
"""

from __future__ import annotations

import os
from typing import Any

from core.errors import NitrodeckError

ATTRIBUTE = "nitrodeck.endpoint"
MAX_VALUE = 128  # ECS attribute values: at most 128 characters


class EcsError(NitrodeckError):
    code = "ND-ECS"
    exit_status = 1


def _client() -> Any:
    import boto3

    return boto3.client("ecs")


def _aws_call(what: str, where: str, fn: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise EcsError(f"{what} failed: {str(exc)[:300]}", where=f"--ecs-cluster {where}",
                       hint="the role needs ecs:ListContainerInstances, DescribeContainerInstances, "
                            "PutAttributes and ListAttributes") from None


def own_container_instance(cluster: str, instance_id: str | None, client: Any = None) -> str:
    named = os.environ.get("NITRODECK_ECS_CONTAINER_INSTANCE")
    if named:
        return named
    if not instance_id:
        raise EcsError("this host's EC2 instance ID is unknown", where=f"--ecs-cluster {cluster}",
                       hint="set NITRODECK_ECS_CONTAINER_INSTANCE to the container instance ARN")
    ecs = client or _client()
    arns: list[str] = []
    token = None
    while True:
        page = _aws_call("ListContainerInstances", cluster, ecs.list_container_instances, cluster=cluster,
                         **({"nextToken": token} if token else {}))
        arns += page.get("containerInstanceArns", [])
        token = page.get("nextToken")
        if not token or len(arns) > 10_000:
            break
    for start in range(0, len(arns), 100):
        described = _aws_call("DescribeContainerInstances", cluster, ecs.describe_container_instances,
                              cluster=cluster, containerInstances=arns[start:start + 100])
        for ci in described.get("containerInstances", []):
            if ci.get("ec2InstanceId") == instance_id:
                return str(ci["containerInstanceArn"])
    raise EcsError(f"no container instance of {cluster} runs on {instance_id}", where=f"--ecs-cluster {cluster}")


def publish_endpoint(cluster: str, url: str, instance_id: str | None, client: Any = None) -> str:
    """PutAttributes nitrodeck.endpoint=url on this host's container instance; returns its ARN."""
    if len(url) > MAX_VALUE:
        raise EcsError(f"the URL is longer than {MAX_VALUE} characters (an ECS attribute's limit)", where="--advertise")
    ecs = client or _client()
    arn = own_container_instance(cluster, instance_id, ecs)
    # targetId: the container instance's ID (the ARN's last part); ECS takes it or the ARN, moto only the ID
    _aws_call("PutAttributes", cluster, ecs.put_attributes, cluster=cluster, attributes=[
        {"name": ATTRIBUTE, "value": url, "targetType": "container-instance", "targetId": arn.rsplit("/", 1)[-1]}])
    return arn


def discover(cluster: str, client: Any = None) -> list[tuple[str, str]]:
    """(EC2 instance ID or container instance ARN, URL) of every agent that published itself."""
    ecs = client or _client()
    found = _list_endpoints(ecs, cluster, by_name=True)
    if not found:
        # an ECS that filters by name only together with a value (moto) answers nothing: ask for all
        # the cluster's container-instance attributes and keep ours
        found = _list_endpoints(ecs, cluster, by_name=False)
    names: dict[str, str] = {}
    arns = sorted(found)
    for start in range(0, len(arns), 100):
        described = _aws_call("DescribeContainerInstances", cluster, ecs.describe_container_instances,
                              cluster=cluster, containerInstances=arns[start:start + 100])
        for ci in described.get("containerInstances", []):
            if ci.get("ec2InstanceId"):
                names[str(ci["containerInstanceArn"])] = str(ci["ec2InstanceId"])
    return sorted((names.get(arn, arn.rsplit("/", 1)[-1]), url) for arn, url in found.items())


def _list_endpoints(ecs: Any, cluster: str, by_name: bool) -> dict[str, str]:
    found: dict[str, str] = {}
    token = None
    while True:
        page = _aws_call("ListAttributes", cluster, ecs.list_attributes, cluster=cluster,
                         targetType="container-instance", **({"attributeName": ATTRIBUTE} if by_name else {}),
                         **({"nextToken": token} if token else {}))
        for attr in page.get("attributes", []):
            if attr.get("name") == ATTRIBUTE and attr.get("targetId") and attr.get("value"):
                found[str(attr["targetId"])] = str(attr["value"])
        token = page.get("nextToken")
        if not token or len(found) > 10_000:
            return found
