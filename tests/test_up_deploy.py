"""deploy/: the examples stay in step with the code that reads them (allowlist, up config, key
policy shape), so a copied example works on day one."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from core.channel.proxy import AllowEntry, load_allowlist
from core.kms.policy import ADMIN_ACTIONS, key_policy
from core.up.config import load_config
from emulator.kms import evaluate_policy
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def test_vsock_proxy_example_allows_only_kms() -> None:
    entries = load_allowlist(DEPLOY / "vsock-proxy.yaml")
    assert entries and all(e.port == 443 and e.address.startswith("kms") for e in entries)
    # literal match: vsock-proxy would resolve the remote first, which a test must not do for a public name
    assert AllowEntry("kms.us-east-1.amazonaws.com", 443) in entries


def test_allocator_example_shape() -> None:
    doc = yaml.safe_load((DEPLOY / "allocator.yaml").read_text())
    assert set(doc) <= {"memory_mib", "cpu_count", "cpu_pool"}
    assert doc["cpu_count"] % 2 == 0 and doc["memory_mib"] >= 512


def test_up_example_and_task_definition_env_are_valid(tmp_path: Path) -> None:
    env = {"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/abc"}
    cfg = load_config(DEPLOY / "up.yaml", env=env)
    assert (cfg.source, cfg.proxy_port, cfg.bridge_address()) == ("docker", 8000, ("127.0.0.1", 8888))

    # the task definition itself lives in deploy/nitrodeck.yaml (tests/test_deploy_template.py)


def test_key_policy_template_matches_what_seal_writes() -> None:
    template = json.loads((DEPLOY / "iam" / "kms-key-policy.json").read_text())
    pcrs = {0: "aa" * 48, 1: "bb" * 48, 2: "cc" * 48}
    generated = key_policy(pcrs, "111122223333", "arn:aws:iam::111122223333:role/nitrodeck-signer-task")
    assert [s["Sid"] for s in template["Statement"]] == [s["Sid"] for s in generated["Statement"]]
    assert template["Statement"][0]["Action"] == list(ADMIN_ACTIONS)
    filled = json.loads(
        json.dumps(template)
        .replace("REPLACE-WITH-PCR0", pcrs[0])
        .replace("REPLACE-WITH-PCR1", pcrs[1])
        .replace("REPLACE-WITH-PCR2", pcrs[2])
    )
    assert filled == generated
    # KMS judges the task role's request (the policy's principal) against the attested PCRs
    who = {"key_arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
           "caller": "arn:aws:iam::111122223333:role/nitrodeck-signer-task"}
    assert evaluate_policy(filled, "Decrypt", pcrs, **who)[0] is True
    assert evaluate_policy(filled, "Decrypt", {**pcrs, 0: "0" * 96}, **who)[0] is False
    assert evaluate_policy(filled, "Decrypt", None, **who)[0] is False  # no Recipient: no release


def test_task_role_policy_grants_release_only_with_attestation() -> None:
    policy = json.loads((DEPLOY / "iam" / "task-role-policy.json").read_text())
    granted: set[str] = set()
    for st in policy["Statement"]:
        actions = set(st["Action"])
        recipient = actions & {"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom"}
        if recipient:
            cond = st["Condition"]["StringEqualsIgnoreCase"]
            assert "kms:RecipientAttestation:ImageSha384" in cond  # never without an attestation
            granted |= recipient
        if "kms:GenerateRandom" in actions:
            # GenerateRandom names no key: IAM grants it only with Resource "*"
            assert st["Resource"] == "*" and actions == {"kms:GenerateRandom"}
    assert granted == {"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom"}
