"""End to end through the real driver and the real emulator (nitro-emu as a subprocess), then the
headless CLI as an operator runs it. No fakes: every enclave is a real supervised process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from core.errors import NitroCliError
from core.models import BuildRequest, LaunchRequest
from core.ops.lifecycle import Lifecycle
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.slow

INSTANCE = "instance_id: i-0e2e0e2e0e2e0e2e0\nvcpus: 16\ncores: 8\nthreads_per_core: 2\nmemory_mib: 32768\n"
# 5 full cores = 10 CPUs and 512 MiB: room for five 2-CPU 64 MiB enclaves, so the 5th is refused
# by the four-enclaves-per-instance limit and not by the pools.
ALLOCATOR = "---\nmemory_mib: 512\ncpu_count: 10\n"


def write_world(home: Path) -> None:
    (home / "emulator" / "etc").mkdir(parents=True)
    (home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
    (home / "emulator" / "instance.yaml").write_text(INSTANCE)


def build_rootfs(tmp: Path) -> Path:
    rootfs = tmp / "rootfs"
    rootfs.mkdir()
    script = rootfs / "run.sh"
    script.write_text("#!/bin/sh\necho hello from the enclave\nwhile true; do echo tick; sleep 1; done\n")
    script.chmod(0o755)
    return rootfs


def world_processes(home: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("NITRODECK_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def nd(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


async def first_lines(lc: Lifecycle, enclave: str, want: str, limit: int = 200) -> list[str]:
    lines: list[str] = []
    async with contextlib.aclosing(lc.console(enclave, disconnect_timeout=20)) as stream:
        async for line in stream:
            lines.append(line)
            if want in line or len(lines) >= limit:
                break  # stopping early must kill the console reader
    return lines


def test_lifecycle_end_to_end(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    commands = []
    lc = Lifecycle(on_command=commands.append)
    assert lc.backend.is_emulator

    eif = tmp_path / "hello.eif"
    built = lc.build(BuildRequest(str(eif), rootfs=str(build_rootfs(tmp_path)), cmd="/bin/sh /run.sh",
                                  env=["GREETING=hi"], name="hello", version="1.0"))
    assert eif.is_file() and len(built.measurements.pcr0) == 96
    info = lc.describe_eif(eif)
    assert info.measurements == built.measurements and info.image_name == "hello" and info.check_crc

    runs = []
    for i in range(4):
        runs.append(lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, debug_mode=(i == 0), name=f"hello{i}")))
    assert len({r.cid for r in runs}) == 4 and all(r.cid >= 4 for r in runs)
    cpus = [c for r in runs for c in r.cpu_ids]
    assert len(cpus) == len(set(cpus)) == 8 and 0 not in cpus

    with pytest.raises(NitroCliError) as fifth:
        lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, name="hello4"))
    # the 5th enclave: NE_CREATE_VM has no slot left, E29 before any memory is allocated
    assert fifth.value.code == "E29" and fifth.value.exit_status == 29 and "[ E39 ]" in fifth.value.stderr
    assert "Start allocating memory..." not in fifth.value.stderr

    enclaves = lc.describe()
    assert sorted(e.name or "" for e in enclaves) == ["hello0", "hello1", "hello2", "hello3"]
    assert all(e.state == "RUNNING" and e.measurements == built.measurements for e in enclaves)
    assert lc.find("hello0").debug_mode and not lc.find("hello1").debug_mode

    st = lc.status()
    assert st.instance_id == "i-0e2e0e2e0e2e0e2e0" and len(st.enclaves) == 4
    assert sorted(st.resources.cpus.held) == sorted(r.enclave_id for r in runs)
    assert len(st.resources.cpus.free) == 2

    lines = asyncio.run(first_lines(lc, "hello0", "hello from the enclave"))
    assert "hello from the enclave" in lines and not any(x.startswith("Connecting to the console") for x in lines)
    with pytest.raises(NitroCliError) as not_debug:
        asyncio.run(first_lines(lc, "hello1", "never"))
    assert not_debug.value.code == "E44" and "debug" in (not_debug.value.hint or "")

    done = lc.terminate_all()
    assert sorted(t.enclave_id for t in done) == sorted(r.enclave_id for r in runs)
    assert all(t.terminated for t in done)
    assert lc.describe() == []
    wait_for(lambda: world_processes(nd_home) == [], timeout=20)

    # the console file outlives the enclave
    kept = lc.console_log(runs[0].enclave_id)
    assert kept is not None and "hello from the enclave" in kept.read_text()

    # the TUI's command log saw the exact commands, by display name
    assert any(c.command.startswith("nitro-emu run-enclave --eif-path") for c in commands)
    assert any(not c.ok and c.error_code == "E29" for c in commands)

    audit = [json.loads(x) for x in (nd_home / "audit.log").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["build"] + ["launch"] * 5 + ["terminate-all"]
    assert audit[5]["result"] == "error" and audit[5]["code"] == "E29"


def test_cli_end_to_end(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    eif = tmp_path / "cli.eif"
    done = nd("build", "--rootfs", str(build_rootfs(tmp_path)), "--cmd", "/bin/sh /run.sh", "--output-file",
              str(eif), "--name", "cli", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "emulator" and eif.is_file()

    done = nd("launch", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--debug-mode", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["backend"] == "emulator" and run["EnclaveName"] == "cli" and run["MemoryMiB"] >= 64

    done = nd("status", "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert [e["EnclaveID"] for e in st["enclaves"]] == [run["EnclaveID"]]
    assert st["enclaves"][0]["ExpectedPCRs"] == "debug"
    assert st["cpu_pool"]["held"] == {run["EnclaveID"]: run["CPUIDs"]}

    # more memory than the free hugepages: refused before nitro-emu runs, with nitro-cli's exit status 27
    done = nd("launch", "--eif-path", str(eif), "--memory", "4096", "--cpu-count", "2", "--json")
    assert done.returncode == 27, done.stderr
    err = json.loads(done.stdout)["error"]
    assert err["code"] == "ND-LAUNCH" and err["nitro_cli_code"] == "E27" and "free hugepages" in err["message"]
    # past that check, nitro-emu's own E27 (wrapped in E39 by nitro-cli), exit 27: code, hint, error log
    done = subprocess.run([sys.executable, "-m", "emulator", "run-enclave", "--eif-path", str(eif), "--memory",
                           "4096", "--cpu-count", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 39 and "[ E27 ]" in done.stderr
    from core.backends.driver import error_from_output
    from emulator.backend import emulator_backend

    e27 = error_from_output(["run-enclave"], done.stderr, done.returncode, emulator_backend())
    assert e27.code == "E27" and str(nd_home / "emulator" / "etc" / "allocator.yaml") in (e27.hint or "")
    assert e27.log_path and Path(e27.log_path).is_file()
    assert "hint:" in str(e27) and "error log:" in str(e27)

    done = nd("console", "cli", "--disconnect-timeout", "2")
    assert done.returncode == 0 and "hello from the enclave" in done.stdout

    done = nd("terminate", "cli", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["terminated"][0]["EnclaveID"] == run["EnclaveID"]
    done = nd("terminate", run["EnclaveID"])
    assert done.returncode == 11
    done = nd("console", run["EnclaveID"], "--log")
    assert done.returncode == 0 and "hello from the enclave" in done.stdout
    assert json.loads(nd("describe", "--json").stdout) == []
    wait_for(lambda: world_processes(nd_home) == [], timeout=20)
