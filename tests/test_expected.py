"""Expected PCR pins: pin, compare, debug verdict, strict file parsing with limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputTooLarge, NitrodeckError
from core.models import EnclaveInfo, Measurements
from core.ops.expected import ExpectedPcrError, ExpectedPcrs, parse_pin

A, B, C = "a" * 96, "b" * 96, "c" * 96


def enclave(name: str, pcr0: str, flags: str = "NONE", image: str | None = None) -> EnclaveInfo:
    return EnclaveInfo("i-1-enc1", 1, 16, 2, [1, 3], 512, "RUNNING", flags, name=name,
                       measurements=Measurements(pcr0, B, C), image_name=image)


def test_pin_and_match(nd_home: Path) -> None:
    exp = ExpectedPcrs()
    assert exp.match(enclave("web", A)) == "unpinned"
    exp.pin("web", Measurements(A.upper(), B, C))
    assert json.loads((nd_home / "expected" / "web.json").read_text())["pcrs"]["0"] == A
    assert exp.expected_for(enclave("web", A)) == {0: A, 1: B, 2: C}
    assert exp.match(enclave("web", A)) == "match"
    assert exp.match(enclave("web", C)) == "mismatch"
    assert exp.match(enclave("web", A, flags="DEBUG_MODE")) == "debug"
    # ImageName (describe --metadata) wins over the enclave name
    assert exp.match(enclave("other", A, image="web")) == "match"
    assert exp.unpin("web") and exp.match(enclave("web", A)) == "unpinned"


def test_bad_names_and_files(nd_home: Path) -> None:
    exp = ExpectedPcrs()
    with pytest.raises(ExpectedPcrError):
        exp.pin("../escape", Measurements(A, B, C))
    (nd_home / "expected").mkdir()
    (nd_home / "expected" / "bad.json").write_text('{"image": "bad", "pcrs": {"0": "xyz"}}')
    with pytest.raises(ExpectedPcrError):
        exp.get("bad")
    with pytest.raises(InputTooLarge):
        parse_pin(b" " * 70000, "big")
    for key in ("\u00b2", "5", "-1", "x"):  # "²".isdigit() is True, yet int() refuses it
        with pytest.raises(ExpectedPcrError):
            parse_pin(json.dumps({"image": "x", "pcrs": {key: A}}).encode(), "keys")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_pin_fuzz(data: bytes) -> None:
    try:
        pin = parse_pin(data, "fuzz")
    except NitrodeckError:
        return
    assert pin.pcrs and all(len(v) == 96 for v in pin.pcrs.values())


def test_pins_keyed_by_eif_then_image_then_name(nd_home: Path) -> None:
    exp = ExpectedPcrs()
    exp.pin("payments", Measurements(A, B, C), eif_path="/eifs/payments.eif")
    # the same EIF under any enclave name: judged by the pin of that file
    by_file = EnclaveInfo("i-1-enc2", 1, 17, 2, [1, 3], 512, "RUNNING", "NONE", name="renamed",
                          measurements=Measurements(A, B, C), eif_path="/eifs/payments.eif")
    judged = exp.judge(by_file)
    assert (judged.verdict, judged.key, judged.by) == ("match", "payments", "eif")
    # a rebuilt file at that path no longer matches its pin
    assert exp.judge(by_file, eif_path="/eifs/payments.eif").verdict == "match"
    rebuilt = EnclaveInfo("i-1-enc3", 1, 18, 2, [1, 3], 512, "RUNNING", "NONE", name="x",
                          measurements=Measurements(C, B, C), eif_path="/eifs/payments.eif")
    assert exp.judge(rebuilt).verdict == "mismatch"
    # no file known: the image name (describe --metadata, or what the journal recorded at launch)
    assert exp.judge(enclave("other-name", A), image_name="payments").by == "image"
    # an image name with no pin is unpinned, even if a pin has the enclave's name
    exp.pin("web", Measurements(A, B, C))
    assert exp.judge(enclave("web", A, image="api")).verdict == "unpinned"
    # only without any image name does the enclave name stand in (how pins were keyed before)
    assert exp.judge(enclave("web", A)).by == "name"
    assert [p.key for p in exp.all()] == ["payments", "web"]


def test_format_1_pins_migrate_on_first_read(nd_home: Path) -> None:
    folder = nd_home / "expected"
    folder.mkdir()
    old = {"image": "legacy", "pcrs": {"0": A, "1": B, "2": C}, "pinned_at": "2026-01-01T00:00:00+00:00"}
    (folder / "legacy.json").write_text(json.dumps(old))
    exp = ExpectedPcrs()
    pin = exp.get("legacy")
    assert pin is not None and pin.key == "legacy" and pin.migrated and pin.pcrs[0] == A
    data = json.loads((folder / "legacy.json").read_text())
    assert data["format"] == 2 and data["key"] == "legacy" and data["migrated_from"] == 1
    assert data["pinned_at"] == old["pinned_at"] and data["eif_path"] is None
    # it keeps judging what it judged before
    assert exp.match(enclave("legacy", A)) == "match"


def test_registry_image_names_are_pin_keys(nd_home: Path) -> None:
    """nitro-cli names an image by its Docker URI before the first ':' (enclave_build), so an ECR image is
    ``123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app``: that must be a key, stored as one plain file."""
    exp = ExpectedPcrs()
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"
    exp.pin(ecr, Measurements(A, B, C))
    assert [p.name for p in (nd_home / "expected").iterdir()] == [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com%2Fteam%2Fapp.json"]
    assert exp.judge(enclave("payments", A, image=ecr)).key == ecr
    exp.pin("a/../b", Measurements(A, B, C))  # one file name, inside the folder
    assert (nd_home / "expected" / "a%2F..%2Fb.json").is_file() and exp.get("a/../b") is not None
    assert [p.key for p in exp.all()] == [ecr, "a/../b"]
    for bad in ("", "/abs", "../up", "a b", "x" * 201, "é"):
        with pytest.raises(ExpectedPcrError):
            exp.pin(bad, Measurements(A, B, C))


def test_a_broken_pin_file_judges_nothing_and_is_named(nd_home: Path) -> None:
    """One unreadable pin file must not take status or the dashboard down: the enclave it would judge is
    unpinned, and the file and its problem are kept for the front ends to say."""
    exp = ExpectedPcrs()
    exp.pin("web", Measurements(A, B, C))
    (nd_home / "expected" / "api.json").write_text('{"format": 2, "key": "api", "pcrs": {"0": "zz"}}')
    assert exp.judge(enclave("x", A, image="api")).verdict == "unpinned"
    assert [p.key for p in exp.all()] == ["web"]
    [line] = exp.problem_lines()
    assert "api.json" in line and "not 96 hex" in line
    exp.pin("api", Measurements(A, B, C))  # re-pinned: the problem is gone
    assert exp.judge(enclave("x", A, image="api")).verdict == "match" and exp.problem_lines() == []
