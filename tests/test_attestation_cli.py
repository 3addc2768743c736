"""`nitrodeck verify-attestation` and `nitrodeck trust emulator-root` as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from core.attest import trust
from core.attest.trust import EMULATOR_ROOT_CERT_FILE
from emulator.nsm import EmulatedNsm
from emulator.pki import EmulatorPki
from tests import conftest

REPO = conftest.REPO
TS = 1725719859545  # blocky-nitrite-2024-09-07.bin


def run(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["NITRODECK_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_real_document_json(tmp_path: Path) -> None:
    doc = conftest.testdata("attestation", "blocky-nitrite-2024-09-07.bin")
    meta = json.loads(conftest.testdata("attestation", "MANIFEST.json").read_text())["documents"][doc.name]
    expect = tmp_path / "eif.json"
    expect.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": meta["pcr0"]}}))

    ok = run("verify-attestation", str(doc), "--at", str(TS), "--expect-pcrs", str(expect), "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["document"]["module_id"] == meta["module_id"]
    assert {c["name"]: c["ok"] for c in report["checks"]}["pcr0"] is True

    expired = run("verify-attestation", str(doc), "--json")
    assert expired.returncode == 3
    failed = [c["name"] for c in json.loads(expired.stdout)["checks"] if c["ok"] is False]
    assert failed == ["validity"]

    nonce = run("verify-attestation", str(doc), "--at", "2024-09-07T14:37:39.545Z", "--nonce", "00ff")
    assert nonce.returncode == 3 and "[FAIL] nonce" in nonce.stdout


def test_cli_hex_file_and_typed_errors(tmp_path: Path) -> None:
    doc = conftest.testdata("attestation", "evervault-beta-nondebug-2022-10-13.bin")
    hex_file = tmp_path / "doc.hex"
    hex_file.write_text(doc.read_bytes().hex() + "\n")
    assert run("verify-attestation", str(hex_file), "--at", "1665651482136").returncode == 0

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x84\x01\x02")
    res = run("verify-attestation", str(garbage), "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["checks"][0]["name"] == "structure"

    big = tmp_path / "big.bin"
    big.write_bytes(b"\x84" + b"\x00" * 100_000)
    res = run("verify-attestation", str(big), "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "ND-TOO-LARGE"
    assert "Traceback" not in res.stderr

    res = run("verify-attestation", str(doc), "--at", "yesterday-ish")
    assert res.returncode == 2 and "--at" in res.stderr and "Traceback" not in res.stderr


def test_cli_emulator_root_and_trust_flag(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = run("trust", "emulator-root", home=home)
    assert res.returncode == 0 and res.stdout.startswith("-----BEGIN CERTIFICATE-----")
    etc = home / "emulator" / "etc"
    assert (etc / EMULATOR_ROOT_CERT_FILE).read_text() == res.stdout
    pki = EmulatorPki.load_or_create(etc)
    assert run("trust", "emulator-root", "--fingerprint", home=home).stdout.strip() == pki.root_fingerprint()

    # a production enclave's PCRs (all-zero ones are a debug-mode document, refused without --allow-debug)
    pcrs = {i: bytes([i + 1]) * 48 for i in (0, 1, 2)}
    nsm = EmulatedNsm("i-0123456789abcdef0-enc0191cceb4289903f", pcrs, False, "i-1234567890abcdef0", None, pki)
    answer = cbor2.loads(nsm.handle(cbor2.dumps({"Attestation": {"nonce": b"abc", "user_data": None,
                                                                 "public_key": None}})))
    doc = tmp_path / "emu.bin"
    doc.write_bytes(answer["Attestation"]["document"])
    refused = run("--backend", "real", "verify-attestation", str(doc), "--json", home=home)
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["trusted_roots"] == [trust.aws_root().name]
    assert not {c["name"]: c["ok"] for c in json.loads(refused.stdout)["checks"]}["root"]
    trusted = run("verify-attestation", str(doc), "--trust-emulator", "--nonce", b"abc".hex(), "--max-age", "600",
                  home=home)
    assert trusted.returncode == 0, trusted.stdout
    auto = run("--backend", "emulator", "verify-attestation", str(doc), "--json", home=home)
    assert auto.returncode == 0
    assert json.loads(auto.stdout)["trusted_roots"] == [trust.aws_root().name, trust.emulator_root(etc).name]
    by_file = run("--backend", "real", "verify-attestation", str(doc), "--trust-root", str(etc / EMULATOR_ROOT_CERT_FILE), home=home)
    assert by_file.returncode == 0, by_file.stdout


# --- trust chosen on purpose (issue 17) --------------------------------------------------------------


def _emulator_document(tmp_path: Path, home: Path) -> Path:
    pki = EmulatorPki.load_or_create(home / "emulator" / "etc")
    # a production enclave's PCRs: all-zero ones would be a debug-mode document (refused without --allow-debug)
    pcrs = {i: bytes([i + 1]) * 48 for i in (0, 1, 2)}
    nsm = EmulatedNsm("i-0123456789abcdef0-enc0191cceb4289903f", pcrs, False, "i-1234567890abcdef0", None, pki)
    answer = cbor2.loads(nsm.handle(cbor2.dumps({"Attestation": {"nonce": None, "user_data": None,
                                                                 "public_key": None}})))
    doc = tmp_path / "emu.bin"
    doc.write_bytes(answer["Attestation"]["document"])
    return doc


def run_env(*args: str, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "NITRODECK_BACKEND"}
    full.update(env, NITRODECK_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "env"),
    [([], {}), ([], {"NITRODECK_BACKEND": "auto"}), (["--backend", "auto"], {"NITRODECK_BACKEND": "emulator"})],
    ids=["nothing-named", "env-auto", "flag-auto-over-env-emulator"],
)
def test_automatic_emulator_backend_trusts_aws_alone(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    """A laptop without nitro-cli picks the emulator backend automatically; that must not widen trust,
    nor must asking for the automatic choice by name (``auto``)."""
    conftest.require(not Path("/dev/nitro_enclaves").exists(), "auto picks the emulator only without the device")
    home = tmp_path / "home"
    doc = _emulator_document(tmp_path, home)
    no_nitro_cli = tmp_path / "bin"
    no_nitro_cli.mkdir()
    env = {**env, "PATH": str(no_nitro_cli)}
    res = run_env("verify-attestation", str(doc), *args, "--json", home=home, env=env)
    assert res.returncode == 3, res.stderr
    out = json.loads(res.stdout)
    assert out["trusted_roots"] == [trust.aws_root().name]
    assert [r["why"] for r in out["trust"]["roots"]] == ["built in: AWS Nitro Enclaves root G1"]
    assert out["trust"]["roots"][0]["sha256"] == trust.AWS_ROOT_G1_SHA256
    assert "chosen automatically" in out["trust"]["notes"][0]
    assert {c["name"] for c in out["checks"] if c["ok"] is False} == {"root", "chain", "validity"}
    root = next(c for c in out["checks"] if c["name"] == "root")
    assert root["rule"] == "root-pinned" and "--trust emulator" in root["detail"]
    # the same in text: which roots, and why
    text = run_env("verify-attestation", str(doc), *args, home=home, env=env)
    assert text.returncode == 3
    trusted = [line for line in text.stdout.splitlines() if line.startswith("trusted root:")]
    assert trusted == ["trusted root: aws-nitro-enclaves-root-g1 (built in: AWS Nitro Enclaves root G1)"]
    notes = [line for line in text.stdout.splitlines() if line.startswith("trust note:")]
    assert len(notes) == 1 and "the emulator backend was chosen automatically" in notes[0], text.stdout


@pytest.mark.parametrize(
    ("args", "env", "why"),
    [
        (["--trust", "emulator"], {}, "--trust emulator"),
        (["--backend", "emulator"], {}, "--backend emulator"),
        ([], {"NITRODECK_BACKEND": "emulator"}, "NITRODECK_BACKEND=emulator"),
    ],
    ids=["trust-flag", "backend-flag", "backend-env"],
)
def test_emulator_root_trusted_when_asked(tmp_path: Path, args: list[str], env: dict[str, str], why: str) -> None:
    home = tmp_path / "home"
    doc = _emulator_document(tmp_path, home)
    res = run_env("verify-attestation", str(doc), *args, "--json", home=home, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert [(r["name"], r["why"]) for r in out["trust"]["roots"]] == [
        (trust.aws_root().name, "built in: AWS Nitro Enclaves root G1"), ("nitrodeck-emulator-test-root", why)]
    assert out["trust"]["notes"] == []


def test_trust_root_file_is_named_with_its_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = _emulator_document(tmp_path, home)
    pem = home / "emulator" / "etc" / EMULATOR_ROOT_CERT_FILE
    res = run_env("--backend", "real", "verify-attestation", str(doc), "--trust-root", str(pem), "--json",
                  home=home, env={})
    assert res.returncode == 0, res.stdout
    assert json.loads(res.stdout)["trust"]["roots"][1]["why"] == f"--trust-root {pem}"


# --- typed errors for hostile input (issue 9 item 4), each a traceback before ------------------------


def _usage_error(res: subprocess.CompletedProcess[str], where: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert (error["code"], error["where"]) == ("ND-USAGE", where), error


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-1", "1e300"])
def test_max_age_must_be_finite(value: str) -> None:
    """nan compared false with every age, so `--max-age nan` verified a document of any age."""
    doc = conftest.testdata("attestation", "blocky-nitrite-2024-09-07.bin")
    _usage_error(run("verify-attestation", str(doc), "--at", str(TS), f"--max-age={value}", "--json"), "--max-age")


@pytest.mark.parametrize("value", ["9999999999999999", "253402300800000", "9999-12-31T23:59:59",
                                   "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59"])
def test_at_out_of_range(value: str) -> None:
    doc = conftest.testdata("attestation", "blocky-nitrite-2024-09-07.bin")
    res = run("verify-attestation", str(doc), f"--at={value}", "--json")
    if value == "9999-12-31T23:59:59":  # the last second is in range: verified as far too late, no overflow
        assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
        failed = {c["name"] for c in json.loads(res.stdout)["checks"] if c["ok"] is False}
        assert failed == {"validity"}
        return
    _usage_error(res, "--at")
    assert "outside 1970-01-01 .. 9999-12-31" in json.loads(res.stdout)["error"]["message"]


def test_odd_length_hex_file_is_a_typed_error(tmp_path: Path) -> None:
    doc = conftest.testdata("attestation", "evervault-beta-nondebug-2022-10-13.bin")
    odd = tmp_path / "doc.hex"
    odd.write_text(doc.read_bytes().hex()[:-1] + "\n")
    _usage_error(run("verify-attestation", str(odd), "--json"), str(odd))


@pytest.mark.parametrize("suffix", [b"\x00", b"\xf6", "copy"])
def test_trailing_bytes_after_a_real_document_are_refused(tmp_path: Path, suffix: object) -> None:
    data = conftest.testdata("attestation", "evervault-beta-nondebug-2022-10-13.bin").read_bytes()
    extended = tmp_path / "doc.bin"
    extended.write_bytes(data + (data if suffix == "copy" else suffix))  # type: ignore[operator]
    res = run("verify-attestation", str(extended), "--at", "1665651482136", "--json")
    assert res.returncode == 3, res.stderr
    checks = json.loads(res.stdout)["checks"]
    assert [(c["name"], c["ok"], c["rule"]) for c in checks] == [("structure", False, "cose-single-item")]
    # and as hex text too
    as_hex = tmp_path / "doc.hex"
    as_hex.write_text(extended.read_bytes().hex())
    res = run("verify-attestation", str(as_hex), "--at", "1665651482136", "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["checks"][0]["rule"] == "cose-single-item"


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "0", "-5", "1e300"])
@pytest.mark.parametrize("command", ["sign", "attest"])
def test_timeout_must_be_finite(tmp_path: Path, command: str, value: str) -> None:
    extra = ["--payload", "x"] if command == "sign" else []
    res = run_env("--backend", "emulator", command, "no-such-enclave", *extra, f"--timeout={value}", "--json",
                  home=tmp_path / "home", env={})
    _usage_error(res, "--timeout")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bridge_deadline_must_be_finite(tmp_path: Path, value: str) -> None:
    res = run_env("--backend", "emulator", "bridge", "--cid", "16", f"--deadline={value}",
                  home=tmp_path / "home", env={})
    assert "Traceback" not in res.stderr and res.returncode == 2, res.stderr
    assert "--deadline" in res.stderr
