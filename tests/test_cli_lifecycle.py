"""The headless lifecycle commands as an operator runs them: `python -m console …` in a subprocess,
against the emulator in an isolated NITRODECK_HOME. Launch/terminate with a real EIF are in
test_e2e_emulator.py (they share its build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.output import Check, checklist, emit_json, key_values, table
from tests.conftest import REPO


def nd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def test_status_json_shape(nd_home: Path) -> None:
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 2\n")
    (nd_home / "emulator" / "instance.yaml").write_text("instance_id: i-0123456789abcdef0\n")
    done = nd("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["backend"] == "emulator" and data["backend_display"] == "nitro-emu"
    assert data["instance_id"] == "i-0123456789abcdef0" and data["read_only"] is False
    assert data["enclaves"] == []
    assert len(data["cpu_pool"]["pool"]) == 2 and data["cpu_pool"]["free"] == data["cpu_pool"]["pool"]
    assert sum(p["total"] * p["size_kb"] for p in data["hugepages"]) == 1024 * 1024
    assert data["host"]["mem_total"] > 0
    # human table, with the read-only flag also accepted after the subcommand
    done = nd("status", "--read-only")
    assert done.returncode == 0, done.stderr
    for text in ("nitro-emu (emulator", "i-0123456789abcdef0", "read-only: yes", "(no enclaves running)",
                 "CPU pool", "Hugepages", "Host"):
        assert text in done.stdout


def test_describe_empty_and_errors(nd_home: Path) -> None:
    done = nd("describe", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []  # nitro-cli's describe-enclaves array
    done = nd("terminate", "nope", "--json")
    assert done.returncode == 11
    assert json.loads(done.stdout)["error"]["code"] == "ND-NO-ENCLAVE"
    assert "Traceback" not in done.stderr and "no running enclave" in done.stderr
    done = nd("terminate")
    assert done.returncode == 2 and "--all" in done.stderr
    done = nd("--backend", "emulator", "terminate", "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"backend": "emulator", "terminated": []}


def test_launch_refusals(nd_home: Path, tmp_path: Path) -> None:
    done = nd("launch", "--eif-path", str(tmp_path / "none.eif"), "--memory", "128", "--cpu-count", "2")
    assert done.returncode == 2 and "no EIF file" in done.stderr
    eif = tmp_path / "x.eif"
    eif.write_bytes(b"not an eif")
    done = nd("--read-only", "launch", "--eif-path", str(eif), "--memory", "128", "--cpu-count", "2", "--json")
    assert done.returncode == 13
    assert json.loads(done.stdout)["error"]["code"] == "ND-READ-ONLY"
    assert not (nd_home / "audit.log").exists()
    done = nd("describe-eif", "--eif-path", str(eif), "--json")
    assert done.returncode == 35 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "E35"


def test_backend_errors(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRODECK_BACKEND", "qemu")
    done = nd("status")
    assert done.returncode == 2 and "unknown backend" in done.stderr and "NITRODECK_BACKEND" in done.stderr
    monkeypatch.setenv("PATH", "/nonexistent")
    done = nd("--backend", "real", "describe")
    assert done.returncode == 127 and "nitro-cli" in done.stderr


def test_build_usage_errors(nd_home: Path) -> None:
    done = nd("build", "--rootfs", "/tmp")
    assert done.returncode == 2 and "--output-file" in done.stderr
    # the real backend without /dev/nitro_enclaves cannot launch, but building needs no device: the
    # emulator-only flag is what is refused here
    done = nd("--backend", "real", "build", "--rootfs", "/tmp", "--output-file", "/tmp/x.eif")
    assert done.returncode == 2 and "--rootfs is only supported by the emulator" in done.stderr
    done = nd("--backend", "real", "launch", "--eif-path", "/tmp/x.eif", "--memory", "128", "--cpu-count", "2")
    assert done.returncode == 13 and "launch is refused: read-only: /dev/nitro_enclaves does not exist" in done.stderr
    assert "--read-only" not in done.stderr  # no flag was given


def test_output_helpers(capsys: pytest.CaptureFixture[str]) -> None:
    text = table([["a", [1, 3], None], ["longer", True, 5]], ["NAME", "CPUS", "X"])
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "CPUS", "X"] and lines[1].split() == ["a", "1,3", "-"]
    assert lines[2].split() == ["longer", "yes", "5"] and lines[1].index("1,3") == lines[0].index("CPUS")
    assert table([], ["A"], empty="(none)").endswith("(none)")
    assert checklist([Check("sig", True), Check("pcr0", False, "differs"), Check("x", None)]).splitlines() == [
        "[ok]   sig", "[FAIL] pcr0: differs", "[--]   x"]
    assert key_values([("a", 1), ("bb", None)]) == "a:  1\nbb: -"
    emit_json({"p": Path("/x"), "b": b"\x01"})
    assert json.loads(capsys.readouterr().out) == {"p": "/x", "b": "01"}


def test_build_payload(nd_home: Path) -> None:
    done = nd("build", "--payload", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    eif = Path(out["output_file"])
    assert eif == nd_home / "eifs" / "nitrodeck-payload.eif" and eif.is_file()
    done = nd("describe-eif", "--eif-path", str(eif), "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["Measurements"]["PCR0"] == out["Measurements"]["PCR0"] and info["ImageName"]
    done = nd("build", "--payload", "--rootfs", "/tmp", "--output-file", str(nd_home / "x.eif"))
    assert done.returncode == 2 and "--payload" in done.stderr


def test_memory_sizes() -> None:
    import argparse

    from console.cmd_lifecycle import _memory_mib

    assert [_memory_mib(x) for x in ("512", "512M", "2g", "1T")] == [512, 512, 2048, 1024 * 1024]
    for bad in ("", "G", "256_mb", "1.5G", "-1", "9" * 20):
        with pytest.raises(argparse.ArgumentTypeError):
            _memory_mib(bad)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=16))
def test_memory_sizes_fuzz(text: str) -> None:
    import argparse

    from console.cmd_lifecycle import _memory_mib

    try:
        value = _memory_mib(text)
    except argparse.ArgumentTypeError:
        return
    assert 0 <= value <= 1 << 32


def test_status_human_table_with_enclaves() -> None:
    from console.cmd_lifecycle import status_json, status_text
    from core.models import EnclaveInfo, Measurements
    from core.ops.lifecycle import Status
    from core.ops.resources import CpuPool, HostStats, HugepagePool, Resources

    e = EnclaveInfo("i-0abc-enc1a2b3c4d5e6f7", 99, 16, 2, [1, 5], 128, "RUNNING", "DEBUG_MODE", name="web",
                    measurements=Measurements("ab" * 48, "cd" * 48, "ef" * 48))
    res = Resources(
        hugepages=[HugepagePool(1048576, 0, 1, 1, 0, "sysfs"), HugepagePool(2048, 1, 256, 192, 64, "sysfs")],
        cpus=CpuPool([1, 5, 2, 6], {e.enclave_id: [1, 5]}, [2, 6], "sysfs"),
        host=HostStats(12.5, 8 * 1024**3, 2 * 1024**3),
    )
    st = Status("real", "nitro-cli", "i-0abc", [e], res, True, "2026-01-01T00:00:00+00:00")
    text = status_text(st, {e.enclave_id: "debug"}, "auto")
    for needle in ("nitro-cli (real, auto)", "read-only: yes", "Enclaves (1)", "web", "abababababababab…",
                   "CPU pool (sysfs)", "free: 2,6", "1G", "2M", "192", "384/512 MiB", "12.5 %",
                   "2.0 GiB used of 8.0 GiB"):
        assert needle in text, needle
    row = next(line for line in text.splitlines() if line.startswith("web"))
    assert row.split()[-1] == "debug" and "1,5" in row.split()
    data = status_json(st, {e.enclave_id: "debug"})
    assert data["enclaves"][0]["Flags"] == "DEBUG_MODE" and data["enclaves"][0]["ExpectedPCRs"] == "debug"
    assert data["hugepages"][1] == {"size_kb": 2048, "node": 1, "total": 256, "free": 192,
                                    "held_by_enclaves": 64, "source": "sysfs"}


def test_status_reports_a_broken_allocator(nd_home: Path) -> None:
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 3\n")
    done = nd("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["cpu_pool"]["pool"] == [] and data["hugepages"] == []
    assert "not multiple of 2" in data["allocator_error"]
    done = nd("status")
    assert "allocator: The CPU count is not multiple of 2" in done.stdout
    assert "Hugepages (emulator-model)" in done.stdout


def test_status_survives_a_broken_instance_model(nd_home: Path) -> None:
    (nd_home / "emulator").mkdir(parents=True)
    (nd_home / "emulator" / "instance.yaml").write_text("vcpus: [")
    done = nd("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["enclaves"] == [] and data["cpu_pool"]["pool"] == []
    assert "instance.yaml" in data["allocator_error"] and "not valid YAML" in data["allocator_error"]
