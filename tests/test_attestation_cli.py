"""`nitrodeck verify-attestation` and `nitrodeck trust emulator-root` as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cbor2

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
    assert res.returncode != 0 and json.loads(res.stdout)["error"]["code"] == "ND-TOO-LARGE"
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

    nsm = EmulatedNsm("i-0123456789abcdef0-enc0191cceb4289903f", {}, False, "i-1234567890abcdef0", None, pki)
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
