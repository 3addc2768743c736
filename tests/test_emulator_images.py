"""nitro-emu build-enclave / describe-eif / pcr against core.eif.build, core.eif.measure and core.eif.sign."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.eif.format import EifWriter, FileRange, SectionType, read_eif
from core.eif.sign import sign_eif

REPO = Path(__file__).resolve().parent.parent
EIF_KEYS_SIGNED = ["EifVersion", "Measurements", "IsSigned", "SigningCertificate", "CheckCRC", "SignatureCheck",
                   "ImageName", "ImageVersion", "Metadata"]


def emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def signing_pair(folder: Path, valid_days: tuple[int, int] = (-1, 30), stem: str = "") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitro-emu test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now + dt.timedelta(days=valid_days[0]))
        .not_valid_after(now + dt.timedelta(days=valid_days[1]))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = folder / f"{stem}cert.pem", folder / f"{stem}key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_signed_build_describe_and_pcr(nd_home: Path) -> None:
    rootfs = nd_home / "root"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "hello.txt").write_text("hello\n")
    meta = nd_home / "meta.json"
    meta.write_text(json.dumps({"team": "ops"}))
    cert, key = signing_pair(nd_home)
    out = nd_home / "signed.eif"
    built = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "cat /app/hello.txt", "--env", "A=1",
                "--output-file", str(out), "--signing-certificate", str(cert), "--private-key", str(key),
                "--name", "hello", "--version", "1.0", "--metadata", str(meta))
    assert built.returncode == 0, built.stderr
    assert built.stderr.splitlines() == ["Start building the Enclave Image...", "Enclave Image successfully created."]
    measurements = json.loads(built.stdout)["Measurements"]
    assert list(measurements) == ["HashAlgorithm", "PCR0", "PCR1", "PCR2", "PCR8"]

    desc = emu("describe-eif", "--eif-path", str(out))
    info = json.loads(desc.stdout)
    assert list(info) == EIF_KEYS_SIGNED
    assert info["Measurements"] == measurements and info["IsSigned"] is True
    assert info["CheckCRC"] is True and info["SignatureCheck"] is True
    assert info["ImageName"] == "hello" and info["ImageVersion"] == "1.0"
    assert list(info["Metadata"])[:6] == ["BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem",
                                          "KernelVersion", "DockerInfo"]
    assert info["Metadata"]["team"] == "ops"  # custom metadata is flattened

    pcr8 = emu("pcr", "--signing-certificate", str(cert))
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    # PCR8 = SHA384(48 zero bytes || SHA384(DER)), computed inline rather than by core's pcr_of_bytes
    expected = hashlib.sha384(b"\0" * 48 + hashlib.sha384(der).digest()).hexdigest()
    assert json.loads(pcr8.stdout) == {"PCR8": expected} == {"PCR8": measurements["PCR8"]}
    pcr = emu("pcr", "--input", str(rootfs / "app" / "hello.txt"))
    assert json.loads(pcr.stdout) == {"PCR": hashlib.sha384(b"\0" * 48 + hashlib.sha384(b"hello\n").digest()).hexdigest()}
    missing = emu("pcr", "--input", str(nd_home / "nope"))
    assert missing.returncode == 19 and missing.stderr.startswith("[ E19 ] File operation failure.")

    # a flipped byte inside a ramdisk: still readable, CheckCRC false
    eif = read_eif(out)
    data = bytearray(out.read_bytes())
    data[eif.ramdisks[-1].data_offset + 5] ^= 0xFF
    out.write_bytes(bytes(data))
    bad = json.loads(emu("describe-eif", "--eif-path", str(out)).stdout)
    assert bad["CheckCRC"] is False and bad["Measurements"]["PCR2"] != measurements["PCR2"]
    assert bad["SignatureCheck"] is False


def test_build_usage_rules(nd_home: Path) -> None:
    none = emu("build-enclave", "--output-file", str(nd_home / "x.eif"))
    assert none.returncode == 2 and "--docker-uri" in none.stderr and "[ E" not in none.stderr
    half = emu("build-enclave", "--rootfs", str(nd_home), "--cmd", "true", "--output-file", str(nd_home / "x.eif"),
               "--private-key", "k.pem")
    assert half.returncode == 2
    help_text = emu("build-enclave", "--help").stdout
    options = help_text.split("options:")[1]
    for flag in ("--rootfs", "--cmd", "--env", "--image-tar"):
        block = options.split(f"  {flag} ")[1].split("\n  --")[0]
        assert "(emulator only)" in block, flag
    for flag in ("--docker-uri", "--output-file", "--signing-certificate", "--name", "--version", "--metadata"):
        assert "(emulator only)" not in options.split(f"  {flag} ")[1].split("\n  --")[0], flag
    bad_eif = nd_home / "junk.eif"
    bad_eif.write_bytes(b"not an eif")
    junk = emu("describe-eif", "--eif-path", str(bad_eif))
    assert junk.returncode == 35 and junk.stderr.startswith("[ E35 ]")


def test_sign_eif_in_place(nd_home: Path) -> None:
    rootfs = nd_home / "root"
    rootfs.mkdir()
    out = nd_home / "plain.eif"
    built = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "true", "--output-file", str(out))
    unsigned = json.loads(built.stdout)["Measurements"]
    cert, key = signing_pair(nd_home)
    signed = emu("sign-eif", "--eif-path", str(out), "--signing-certificate", str(cert), "--private-key", str(key))
    assert signed.returncode == 0 and signed.stderr == "Enclave Image successfully signed.\n"
    measurements = json.loads(signed.stdout)["Measurements"]
    assert measurements["PCR0"] == unsigned["PCR0"] and "PCR8" in measurements
    assert json.loads(emu("describe-eif", "--eif-path", str(out)).stdout)["SignatureCheck"] is True
    bad = emu("sign-eif", "--eif-path", str(out), "--signing-certificate", str(cert), "--private-key", str(cert))
    assert bad.returncode == 60 and bad.stderr.startswith("[ E60 ] Signing error.")


def test_run_checks_the_signature_e59(nd_home: Path) -> None:
    """nitro-cli's PcrSignatureChecker: a signed EIF runs only if its COSE signature covers its PCR0 and
    the certificate is valid now; otherwise E59 (wrapped in E39) and nothing is allocated."""
    from tests import nitro_cli_texts as T
    from tests.test_emulator_conformance import assert_stderr, block, wrapped

    rootfs = nd_home / "root"
    rootfs.mkdir()
    a, b, grafted, expired = (nd_home / f"{n}.eif" for n in ("a", "b", "grafted", "expired"))
    for out, cmd in ((a, "sleep 30"), (b, "sleep 31")):
        assert emu("build-enclave", "--rootfs", str(rootfs), "--cmd", cmd, "--output-file", str(out)).returncode == 0
    cert, key = signing_pair(nd_home)
    sign_eif(a, cert, key)
    # b's sections with a's signature: the signed PCR0 is not b's
    eif_a, eif_b = read_eif(a), read_eif(b)
    writer = EifWriter()
    for sec in eif_b.sections:
        writer.add(sec.type, FileRange(b, sec.data_offset, sec.size))
    sig = eif_a.signature
    assert sig is not None
    writer.add(SectionType.SIGNATURE, FileRange(a, sig.data_offset, sig.size))
    writer.write(grafted)
    old_cert, old_key = signing_pair(nd_home, (-30, -1), "old-")
    sign_eif(b, old_cert, old_key, output=expired)

    for bad in (grafted, expired):
        res = emu("run-enclave", "--eif-path", str(bad), "--memory", "64", "--cpu-count", "2")
        assert (res.returncode, res.stdout) == (39, ""), res.stderr
        # commands.rs:96 signature_checker.verify -> EIFSignatureCheckerError, before any allocation
        assert_stderr(res, wrapped(block("E59", T.DETAIL["E59"])))
        assert json.loads(emu("describe-enclaves").stdout) == []
    ok = emu("run-enclave", "--eif-path", str(a), "--memory", "64", "--cpu-count", "2")
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(emu("terminate-enclave", "--all").stdout)) == 1
