"""KMS on the parent's side and the enclave's: credentials, the client, PCR-pinned key policies and the
wallet key's forms. Enclave-safe (enclave_app imports it): it may import only core's root modules and
core.crypto; sealing and provisioning, which need the lifecycle, live in core.ops.provision.
"""

from core.kms.client import (
    DEFAULT_PROXY_PORT,
    DEFAULT_REGION,
    KEY_ENCRYPTION_ALGORITHM,
    MAX_CIPHERTEXT,
    MAX_KEY_FILE,
    RECIPIENT_ACTIONS,
    AwsCredentials,
    CredentialsError,
    KmsError,
    check_region,
    kms_call,
    kms_client,
    session_credentials,
)
from core.kms.policy import ADMIN_ACTIONS, account_of, enclave_statement, key_policy, pcr_conditions
from core.kms.wallet import load_wallet_key, raw_scalar, wallet_public_hex, wallet_spki

__all__ = [
    "ADMIN_ACTIONS",
    "DEFAULT_PROXY_PORT",
    "DEFAULT_REGION",
    "KEY_ENCRYPTION_ALGORITHM",
    "MAX_CIPHERTEXT",
    "MAX_KEY_FILE",
    "RECIPIENT_ACTIONS",
    "AwsCredentials",
    "CredentialsError",
    "KmsError",
    "account_of",
    "check_region",
    "enclave_statement",
    "key_policy",
    "kms_call",
    "kms_client",
    "load_wallet_key",
    "pcr_conditions",
    "raw_scalar",
    "session_credentials",
    "wallet_public_hex",
    "wallet_spki",
]
