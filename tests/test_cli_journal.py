"""`nitrodeck events`, `pin`, `pins`, `unpin` as an operator runs them (real subprocesses, the emulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_e2e_emulator import nd, write_world

pytestmark = pytest.mark.slow


def test_events_and_pins_cli(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "run.sh").write_text("#!/bin/sh\necho short life\nsleep 0.3\nexit 4\n")
    eif = tmp_path / "short.eif"
    done = nd("build", "--rootfs", str(rootfs), "--cmd", "/bin/sh /run.sh", "--output-file", str(eif),
              "--name", "short-lived")
    assert done.returncode == 0, done.stderr

    # pin under the EIF's image name; read-only refuses (and writes nothing)
    refused = nd("--read-only", "pin", str(eif))
    assert refused.returncode == 13 and not (nd_home / "expected").exists()
    done = nd("pin", str(eif), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key"] == "short-lived"
    done = nd("pin", str(eif), "--as", "canary", "--json")
    assert json.loads(done.stdout)["key"] == "canary"
    pins = json.loads(nd("pins", "--json").stdout)["pins"]
    assert [p["key"] for p in pins] == ["canary", "short-lived"] and pins[0]["eif_path"] == str(eif)

    done = nd("launch", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--name", "blink", "--json")
    assert done.returncode == 0, done.stderr
    enclave_id = json.loads(done.stdout)["EnclaveID"]

    # `events` notices the exit itself (no other process watched): launched, then exited once
    def kinds() -> list[str]:
        out = nd("events", "--enclave", "blink", "--json")
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["event"] for line in out.stdout.splitlines()]

    import time

    deadline = time.monotonic() + 30
    while "exited" not in kinds() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kinds() == ["launched", "exited"]
    lines = [json.loads(x) for x in nd("events", "--json").stdout.splitlines()]
    assert [e["event"] for e in lines] == ["built", "pinned", "pinned", "launched", "exited"]
    exited = lines[-1]
    assert exited["enclave_id"] == enclave_id and exited["exit_status"] == 4 and exited["uptime_s"] >= 0
    assert nd("events", "--since", "2999-01-01T00:00:00Z", "--json").stdout == ""
    human = nd("events", "--since", "1h")
    assert human.returncode == 0 and "exited" in human.stdout and "blink" in human.stdout
    [built] = [line for line in human.stdout.splitlines() if "  built  " in line]
    assert "image short-lived" in built and str(eif) in built
    assert nd("events", "--since", "soon").returncode == 2
    assert nd("events", "--since", "").returncode == 2  # not "everything"
    assert nd("events", "--enclave", " ").returncode == 2  # not "every enclave"
    assert "exited" in nd("events", "--since", "1h30m").stdout  # compound durations

    # the exited enclave keeps its verdict: status lists it under "exited"; its pin is the EIF's file pin
    st = json.loads(nd("status", "--json").stdout)
    assert [e["enclave_id"] for e in st["exited"]] == [enclave_id] and st["journal"]["warnings"] == []
    # the text says when it ended (the emulator's supervisor knows), not when the exit was noticed
    ended = st["exited"][0]["ended_at"]
    text = nd("status").stdout
    assert ended and ended < st["exited"][0]["time"] and ended in text
    # judged against the pin of its EIF file after the exit (the newest pin made from that file), and said so
    gone = st["exited"][0]
    assert (gone["ExpectedPCRs"], gone["ExpectedPCRsPin"], gone["ExpectedPCRsPinnedBy"]) == ("match", "canary", "eif")
    assert "match (pin canary)" in text

    # a key no pin can have is refused before anything runs (exit 2, not audited)
    for bad in ("", "../x", "a b"):
        refused = nd("pin", str(eif), "--as", bad)
        assert refused.returncode == 2 and "pin --as" in refused.stderr, refused.stderr

    # a broken pin file: status still answers, and says which file judged nothing; pins lists it
    (nd_home / "expected" / "broken.json").write_text("{not json")
    st = nd("status", "--json")
    assert st.returncode == 0 and any("broken.json" in w for w in json.loads(st.stdout)["warnings"])
    assert json.loads(nd("pins", "--json").stdout)["unreadable"][0]["file"].endswith("broken.json")
    (nd_home / "expected" / "broken.json").unlink()

    assert nd("--read-only", "unpin", "canary").returncode == 13
    done = nd("unpin", "canary", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["unpinned"] == "canary"
    assert nd("unpin", "canary").returncode == 2
    audit = [json.loads(x)["action"] for x in (nd_home / "audit.log").read_text().splitlines()]
    assert audit.count("pin") == 2 and audit.count("unpin") == 1
