"""Key policies that release a key only to an enclave with the pinned PCRs (kms:RecipientAttestation:*)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.kms.client import RECIPIENT_ACTIONS, KmsError

#: administrative actions the operator keeps; key *use* is left to the PCR-pinned statement only
ADMIN_ACTIONS = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:Encrypt",
)


# --- policies ---------------------------------------------------------------------------------------


def pcr_conditions(pcrs: Mapping[int, str]) -> dict[str, str]:
    """ImageSha384 is PCR0; the other PCRs go by index. Values are lower-case hex."""
    cond: dict[str, str] = {}
    if 0 in pcrs:
        cond["kms:RecipientAttestation:ImageSha384"] = pcrs[0].lower()
    for index, value in sorted(pcrs.items()):
        if index != 0:
            cond[f"kms:RecipientAttestation:PCR{index}"] = value.lower()
    return cond


def enclave_statement(
    pcrs: Mapping[int, str], principal: str, actions: Sequence[str] = RECIPIENT_ACTIONS
) -> dict[str, Any]:
    return {
        "Sid": "Enclave key release pinned to the EIF measurements",
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": [f"kms:{a}" for a in actions],
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": pcr_conditions(pcrs)},
    }


def key_policy(pcrs: Mapping[int, str], account_id: str, principal: str | None = None) -> dict[str, Any]:
    """A key policy: the account administers the key (and may Encrypt), only the attested EIF may use it."""
    root = f"arn:aws:iam::{account_id}:root"
    return {
        "Version": "2012-10-17",
        "Id": "nitrodeck-enclave-key",
        "Statement": [
            {
                "Sid": "Key administration and sealing",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": list(ADMIN_ACTIONS),
                "Resource": "*",
            },
            enclave_statement(pcrs, principal or root),
        ],
    }


def account_of(key_arn: str) -> str:
    parts = key_arn.split(":")
    if len(parts) < 6 or not parts[4].isdigit():
        raise KmsError(f"not a KMS key ARN: {key_arn[:120]!r}", where="DescribeKey")
    return parts[4]

