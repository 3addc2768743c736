"""`nitrodeck build --build-time` pins the EIF's BuildTime, so the same inputs give the same bytes."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.backends.driver import build_args
from core.backends.registry import select_backend
from core.eif import build
from core.errors import UsageError
from core.models import BuildRequest


def _build(home: Path, out: Path, rootfs: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "console", "build", "--rootfs", str(rootfs), "--cmd", "/bin/app",
         "--output-file", str(out), "--json", *extra],
        check=True, capture_output=True, timeout=120,
    )


def test_fixed_build_time_gives_identical_bytes(nd_home: Path) -> None:
    rootfs = nd_home / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    a, b, c = nd_home / "a.eif", nd_home / "b.eif", nd_home / "c.eif"
    _build(nd_home, a, rootfs, "--build-time", "2025-01-02T03:04:05Z")
    _build(nd_home, b, rootfs, "--build-time", "2025-01-02T03:04:05Z")
    _build(nd_home, c, rootfs, "--build-time", "2025-06-01T00:00:00Z")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # BuildTime is in the (unmeasured) metadata section


def test_build_time_is_emulator_only() -> None:
    req = BuildRequest(output_file="x.eif", docker_uri="app:latest", build_time="2025-01-01T00:00:00Z")
    assert "--build-time" in build_args(req, select_backend("emulator"))
    with pytest.raises(UsageError, match="only supported by the emulator"):
        build_args(req, select_backend("real"))


def test_build_time_now_has_nanoseconds_like_chrono(monkeypatch: pytest.MonkeyPatch) -> None:
    # nitro-cli: chrono's Utc::now().to_rfc3339() -> "2025-10-05T13:12:27.410516995+00:00"
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(build.time, "time_ns", lambda: 1759669947_410516995)
    assert build.resolve_build_time(None) == "2025-10-05T13:12:27.410516995+00:00"
    monkeypatch.setattr(build.time, "time_ns", lambda: 1759669947_000000000)
    assert build.resolve_build_time(None) == "2025-10-05T13:12:27+00:00"  # AutoSi: no zero fraction
    monkeypatch.setattr(build.time, "time_ns", lambda: 1759669947_410000000)
    assert build.resolve_build_time(None) == "2025-10-05T13:12:27.410+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    assert build.resolve_build_time(None) == "1970-01-01T00:00:01+00:00"


@pytest.mark.parametrize("epoch", ["99999999999999999", "-1", "1e9", " 12", "²"])
def test_bad_source_date_epoch_is_a_build_error(monkeypatch: pytest.MonkeyPatch, epoch: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    with pytest.raises(build.BuildError) as info:
        build.resolve_build_time(None)
    assert info.value.cli_code == "E48" and info.value.where == "SOURCE_DATE_EPOCH"


@pytest.mark.parametrize("value", ["not a time", "2025-13-01T00:00:00Z", "", "2025-01-01T00:00:00Z" + "0" * 100])
def test_bad_build_time_is_a_build_error(value: str) -> None:
    with pytest.raises(build.BuildError) as info:
        build.resolve_build_time(value) if value else build.check_build_time(value)
    assert info.value.cli_code == "E48" and info.value.where == "--build-time"


def test_bad_build_time_through_nitro_emu_is_e48(nd_home: Path) -> None:
    rootfs = nd_home / "rootfs"
    rootfs.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "build-enclave", "--rootfs", str(rootfs), "--cmd", "/bin/app",
         "--build-time", "yesterday", "--output-file", str(nd_home / "x.eif")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 48 and any(ln.startswith("[ E48 ] ") for ln in done.stderr.splitlines())
    assert not (nd_home / "x.eif").exists()


def test_payload_keeps_signing_and_naming(nd_home: Path) -> None:
    """`build --payload` fixes the image but keeps what the operator adds: signature (PCR8), name."""
    import datetime as dt
    import json

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payload signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    (nd_home / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (nd_home / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out = nd_home / "signed-payload.eif"
    res = subprocess.run(
        [sys.executable, "-m", "console", "build", "--payload", "--output-file", str(out), "--name", "wallet",
         "--signing-certificate", str(nd_home / "cert.pem"), "--private-key", str(nd_home / "key.pem"), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "PCR8" in json.loads(res.stdout)["Measurements"]
    info = subprocess.run([sys.executable, "-m", "emulator", "describe-eif", "--eif-path", str(out)],
                          capture_output=True, text=True, timeout=60, check=True)
    described = json.loads(info.stdout)
    assert described["IsSigned"] is True and described["SignatureCheck"] is True
    assert described["ImageName"] == "wallet"


def test_build_progress_lines_arrive_through_the_lifecycle(nd_home: Path) -> None:
    """nitro-cli prints its stages on stderr; Lifecycle.build hands them over as they come."""
    from core.ops.lifecycle import Lifecycle

    rootfs = nd_home / "rootfs"
    rootfs.mkdir()
    (rootfs / "app").write_text("#!/bin/sh\n")
    seen: list[str] = []
    lc = Lifecycle(select_backend("emulator"))
    result = lc.build(
        BuildRequest(output_file=str(nd_home / "p.eif"), rootfs=str(rootfs), cmd="/app"), progress=seen.append
    )
    assert result.measurements.pcr0
    assert seen[0] == "Start building the Enclave Image..."
    assert seen[-1] == "Enclave Image successfully created."
