"""The emulator's PKI: one root per home (even under concurrency), Nitro-shaped chain, leaf rules."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from core.attest.trust import EMULATOR_ROOT_KEY_FILE, aws_root
from emulator.pki import LEAF_LIFETIME, EmulatorPki, enclave_serial_part

MODULE_ID = "i-0123456789abcdef0-enc0191cceb4289903f"


def test_root_is_made_once_and_is_not_aws(tmp_path: Path) -> None:
    first = EmulatorPki.load_or_create(tmp_path)
    second = EmulatorPki.load_or_create(tmp_path)
    assert first.root_der == second.root_der
    assert os.stat(tmp_path / EMULATOR_ROOT_KEY_FILE).st_mode & 0o777 == 0o600
    cn = first.root.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "emulator.nitro-enclaves"
    assert first.root.cert.subject != aws_root().cert.subject
    assert first.root_fingerprint() != aws_root().fingerprint
    years = (first.root.cert.not_valid_after_utc - first.root.cert.not_valid_before_utc).days / 365
    assert 29 < years < 31


def test_concurrent_creators_agree_on_one_root(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from emulator.pki import EmulatorPki;"
        "print(EmulatorPki.load_or_create(Path(sys.argv[1])).root_fingerprint())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    prints = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(prints) == 1


def _bc(cert: x509.Certificate) -> x509.BasicConstraints:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value


def test_chain_shape_matches_nitro(tmp_path: Path) -> None:
    pki = EmulatorPki.load_or_create(tmp_path)
    signer = pki.leaf_for(MODULE_ID)
    bundle = [x509.load_der_x509_certificate(d) for d in signer.cabundle]
    assert [_bc(c).path_length for c in bundle] == [None, 2, 1, 0]
    # as on AWS: CRL distribution points on the regional and zonal CAs only; the instance CA is
    # named after the instance the module id belongs to
    crl = [ExtensionOID.CRL_DISTRIBUTION_POINTS in {e.oid for e in c.extensions} for c in bundle]
    assert crl == [False, True, True, False]
    instance_cn = bundle[3].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert instance_cn == "i-0123456789abcdef0.us-east-1.emulator.nitro-enclaves"
    instance_ku = bundle[3].extensions.get_extension_for_class(x509.KeyUsage)
    assert instance_ku.critical and instance_ku.value.key_cert_sign and not instance_ku.value.digital_signature
    for child, parent in zip(bundle[1:], bundle[:-1], strict=True):
        child.verify_directly_issued_by(parent)
    leaf = x509.load_der_x509_certificate(signer.certificate)
    leaf.verify_directly_issued_by(bundle[3])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == LEAF_LIFETIME
    assert dt.timedelta(hours=3, seconds=3) == LEAF_LIFETIME
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert not ku.critical and ku.value.digital_signature and ku.value.content_commitment
    oids = {e.oid for e in leaf.extensions}
    assert ExtensionOID.AUTHORITY_KEY_IDENTIFIER not in oids and ExtensionOID.SUBJECT_KEY_IDENTIFIER not in oids
    assert leaf.serial_number >> 64 == 0x0191CCEB4289903F == enclave_serial_part(MODULE_ID)
    # nitro-cli (and the emulator) print the enclave's u64 without padding: 15 digits happen
    assert enclave_serial_part("i-4c8b9a4d3ae18ee48-enc1a21d7c098af050") == 0x1A21D7C098AF050
    short = EmulatorPki.load_or_create(tmp_path).leaf_for("i-4c8b9a4d3ae18ee48-enc1a21d7c098af050")
    short_instance = x509.load_der_x509_certificate(short.cabundle[3]).subject
    assert short_instance.rfc4514_string().startswith("CN=i-4c8b9a4d3ae18ee48.us-east-1.emulator.nitro-enclaves")
    assert leaf.serial_number & (2**64 - 1) == int(leaf.not_valid_before_utc.timestamp())
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"{MODULE_ID}.us-east-1.aws"
    assert "nitrodeck emulator" in leaf.subject.rfc4514_string()


def test_leaf_reused_then_refreshed_near_expiry(tmp_path: Path) -> None:
    pki = EmulatorPki.load_or_create(tmp_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = pki.leaf_for(MODULE_ID, now)
    assert pki.leaf_for(MODULE_ID, now + dt.timedelta(hours=1)).certificate == first.certificate
    later = pki.leaf_for(MODULE_ID, now + dt.timedelta(hours=2, minutes=55))
    assert later.certificate != first.certificate
    assert pki.leaf_for("other-enclave", now).certificate != first.certificate
    # past the instance CA's day the whole lower chain is re-made
    next_day = pki.leaf_for(MODULE_ID, now + dt.timedelta(days=1))
    assert next_day.cabundle[3] != first.cabundle[3]
    assert next_day.cabundle[0] == first.cabundle[0]
