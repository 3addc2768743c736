"""console.cmd_sign input handling: every bad input is a typed error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.cli import main
from console.cmd_sign import check_lines, parse_nonce, read_expected_pcrs, read_payload
from core.checks import Check
from core.errors import InputTooLarge, NitrodeckError, UsageError


def test_payload_text_and_file(tmp_path: Path) -> None:
    assert read_payload("héllo") == "héllo".encode()
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\xff" * 10)
    assert read_payload(f"@{blob}") == b"\x00\xff" * 10
    blob.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(InputTooLarge):
        read_payload(f"@{blob}")
    with pytest.raises(InputTooLarge):
        read_payload("y" * (64 * 1024 + 1))
    with pytest.raises(UsageError, match="cannot read"):
        read_payload(f"@{tmp_path / 'missing'}")


def test_expected_pcrs_file(tmp_path: Path) -> None:
    f = tmp_path / "pcrs.json"
    f.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "AB" * 48}}))
    assert read_expected_pcrs(str(f)) == {0: "ab" * 48}
    assert read_expected_pcrs(None) is None
    for bad in ("not json", "[1]", '{"PCR0": "zz"}', '{"PCRX": "' + "00" * 48 + '"}'):
        f.write_text(bad)
        with pytest.raises(NitrodeckError):
            read_expected_pcrs(str(f))
    f.write_text(" " * (64 * 1024 + 1))
    with pytest.raises(InputTooLarge):
        read_expected_pcrs(str(f))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_expected_pcrs_fuzz(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        fh.write(text)
        fh.flush()
        try:
            pcrs = read_expected_pcrs(fh.name)
        except NitrodeckError:
            return
    assert pcrs and all(0 <= i < 32 for i in pcrs)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=1100))
def test_nonce_fuzz(text: str) -> None:
    try:
        nonce = parse_nonce(text)
    except UsageError:
        return
    assert nonce is not None and 0 < len(nonce) <= 512


def test_checklist_marks() -> None:
    text = check_lines([Check("a", True, "fine"), Check("b", False, "bad"), Check("c", None)])
    assert text.splitlines() == ["✓ a: fine", "✗ b: bad", "– c"]


def test_cli_errors_are_typed(nd_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", "nope", "--payload", "x"]) == 11  # ND-NO-ENCLAVE: nitro-cli's E11 status
    assert "no running enclave" in capsys.readouterr().err
    assert main(["attest", "nope", "--nonce", "zz"]) == 2
    assert main(["bridge", "--listen", "0.0.0.0:0", "--cid", "16"]) == 2
    err = capsys.readouterr().err
    assert "non-loopback" in err and "Traceback" not in err
