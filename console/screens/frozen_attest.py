"""The frozen world's test-sign evidence: what emulated enclaves answered, checked by core.

The test-sign scene must show what core reports, not a hand-written list. The evidence (an attestation
document per frozen enclave, made by the emulator's NSM format and test PKI at the frozen time, and a
secp256k1 signature over the dialog's default payload by the enclave's key) was generated once by
``python -m console.screens.frozen_regen`` and is stored in ``frozen_evidence.py``: keys are random, so
generating it at run time would change every screenshot. At run time the report is
``core.ops.testsign.sign_report`` over that evidence, verified by core.attest.verify at the frozen time
against the stored test root.
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.channel.protocol import sign_binding
from core.models import EnclaveInfo

#: what the test-sign dialog sends unless the operator types something else (console/screens/testsign.py)
DEFAULT_PAYLOAD = b"hello from nitrodeck"
SCHEME = "secp256k1"
NONCE = bytes(range(32))


def generate(enclaves: list[EnclaveInfo], now: dt.datetime) -> dict[str, Any]:
    """New evidence for ``enclaves`` at ``now`` (a fresh test root, a fresh key per enclave)."""
    from core.crypto import cose
    from emulator.nsm import encode_payload
    from emulator.pki import EmulatorPki, _make_root

    with tempfile.TemporaryDirectory() as tmp:
        pki = EmulatorPki(_make_root(now), Path(tmp))
        out: dict[str, Any] = {"root": pki.root_pem().decode(), "enclaves": {}}
        for enclave in enclaves:
            key = ec.generate_private_key(ec.SECP256K1())
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            signature = key.sign(DEFAULT_PAYLOAD, ec.ECDSA(hashes.SHA256()))
            measured = enclave.measurements.pcrs() if enclave.measurements and not enclave.debug_mode else {}
            pcrs = {i: bytes.fromhex(measured[i]) if i in measured else bytes(48) for i in range(16)}
            signer = pki.leaf_for(enclave.enclave_id, now=now)
            payload = encode_payload(
                module_id=enclave.enclave_id,
                timestamp_ms=int(now.timestamp() * 1000),
                pcrs=pcrs,
                certificate=signer.certificate,
                cabundle=list(signer.cabundle),
                public_key=spki,
                user_data=sign_binding(spki, DEFAULT_PAYLOAD, NONCE),
                nonce=NONCE,
            )
            document = cose.sign(payload, signer.key).to_bytes(tagged=False)
            out["enclaves"][enclave.enclave_id] = {
                "public_key": base64.b64encode(spki).decode(),
                "signature": base64.b64encode(signature).decode(),
                "document": base64.b64encode(document).decode(),
            }
        return out


def report(enclave: EnclaveInfo, payload: bytes, scheme: str, expected: dict[int, str] | None,
           now: dt.datetime) -> Any:
    """core's test-sign report for the stored answer of ``enclave`` (a payload or scheme other than the
    stored one fails its signature check, as a real enclave's answer to another question would)."""
    from console.screens.frozen_evidence import EVIDENCE
    from core.ops.testsign import sign_report

    answer = EVIDENCE["enclaves"][enclave.enclave_id]
    return sign_report(
        enclave,
        scheme,
        payload,
        NONCE,
        base64.b64decode(answer["signature"]),
        base64.b64decode(answer["public_key"]),
        base64.b64decode(answer["document"]),
        expected,
        via_label=f"vsock {enclave.cid}:5005",
        trust=frozen_trust(),
        at=now,
    )


def frozen_trust() -> Any:
    """The stored test root, the only one the frozen world trusts (core.attest.trust.TrustChoice)."""
    from console.screens.frozen_evidence import EVIDENCE
    from core.attest.trust import TrustChoice, TrustRoot

    root = TrustRoot.from_cert("nitrodeck-emulator-test-root",
                               x509.load_pem_x509_certificate(EVIDENCE["root"].encode()))
    return TrustChoice([root], ["the enclave is emulated (emulator backend)"])
