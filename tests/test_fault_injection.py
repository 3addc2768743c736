"""Fault injection against the emulator (issue 9 items 7 and 8, and item 11's module): kill -9 at each
stage of a launch, SIGSTOP, a full disk (a small tmpfs the test mounts as root under its own temp
folder) and an edited enclave table. Every test asserts what `status` says afterwards: an enclave is
listed exactly when it runs, an unresponsive one is shown as such with what it holds, and resources
are free exactly when nothing holds them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.backends.driver import NitroCli
from core.channel.protocol import BlockingClient
from core.channel.vsock import PARENT_CID, Transport
from core.errors import NitroCliError
from core.models import LaunchRequest
from core.ops.lifecycle import Lifecycle, Status
from emulator import control, state
from emulator.cli import spawn_supervisor
from enclave_app.packaging import payload_request
from tests.conftest import REPO, is_root, require, wait_for
from tests.test_emulator_run import build, configure, emu

pytestmark = pytest.mark.slow

CPUS = [1, 2, 3, 4, 5, 6, 7]  # configure(cpu_count=...) gives the pool 1..n (CPU 0 stays with the host)


def status() -> Status:
    return Lifecycle().status()


def held_cpus(st: Status) -> list[int]:
    return sorted(c for cpus in st.resources.cpus.held.values() for c in cpus)


def assert_idle(st: Status) -> None:
    """Nothing listed, nothing held: every CPU of the pool free, every page free."""
    assert st.enclaves == []
    assert st.resources.cpus.free == st.resources.cpus.pool
    assert all(p.held_by_enclaves == 0 for p in st.resources.hugepages)


def supervisors(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "emulator.supervisor" in " ".join(proc.info["cmdline"] or []) and proc.environ().get(
                "NITRODECK_HOME"
            ) == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def sleeper(nd_home: Path) -> Path:
    configure(nd_home, cpu_count=4)
    return build(nd_home, "echo enclave up\nexec sleep 300", "sleeper")


def launch(eif: Path, *extra: str) -> dict[str, Any]:
    res = emu("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", *extra)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


# --- kill -9 at each stage of a launch ------------------------------------------------------------


def _launch_request(eif: Path) -> dict[str, Any]:
    return {"eif_path": str(eif), "memory_mib": 64, "cpu_count": 2, "cpu_ids": None, "cid": 0, "debug": False,
            "name": None}  # fmt: skip


@pytest.mark.parametrize("stage", ["before-request", "allocating", "result-unconfirmed"])
def test_run_enclave_killed_at_each_stage_leaves_no_enclave(nd_home: Path, sleeper: Path, stage: str) -> None:
    """nitro-emu's side of the launch channel disappearing is what kill -9 of run-enclave does: this
    test holds that side itself and drops it at a chosen stage. A launch whose caller never got the
    result must not leave an enclave running (it used to: the caller reported failure, status RUNNING)."""
    chan, pid = spawn_supervisor()
    with chan:
        chan.settimeout(60)
        if stage != "before-request":
            control.send(chan, _launch_request(sleeper))
            while True:
                msg = control.recv(chan)
                if stage == "allocating" and "Start allocating" in str(msg.get("stderr", "")):
                    break
                if "result" in msg:
                    assert stage == "result-unconfirmed"
                    break
                assert "error" not in msg, msg
    # our end is closed without an ack: the supervisor rolls everything back and exits
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 45)
    assert_idle(status())
    assert supervisors(nd_home) == []
    assert state.read_entries() == []


def test_nitro_emu_killed_mid_launch_never_reports_failure_for_a_running_enclave(
    nd_home: Path, sleeper: Path
) -> None:
    """The real command killed while it waits: whatever moment the kill lands, a launch that printed
    no result leaves no enclave, and one that printed a result left a running enclave."""
    for delay in (0.0, 0.3, 0.8, 1.5, 3.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "run-enclave", "--eif-path", str(sleeper), "--memory", "64",
             "--cpu-count", "2"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        proc.kill()
        out, _err = proc.communicate(timeout=30)
        # every supervisor still alive has either rolled back (and exits) or runs a confirmed enclave
        wait_for(lambda: _settled(nd_home), 45)
        time.sleep(1.0)
        st = status()
        if out.strip():
            info = json.loads(out)
            assert [e.enclave_id for e in st.enclaves] == [info["EnclaveID"]]
            assert emu("terminate-enclave", "--all").returncode == 0
        else:
            assert st.enclaves == [], f"kill after {delay}s: a failed launch left {st.enclaves}"
        assert_idle(status())


def _settled(home: Path) -> bool:
    started = {e.supervisor_pid for e in state.read_entries() if e.started}
    return all(p.pid in started for p in supervisors(home) if p.status() != psutil.STATUS_ZOMBIE)


@pytest.mark.parametrize("stage", ["allocated", "booted"])
def test_supervisor_killed_at_each_stage_frees_everything(nd_home: Path, sleeper: Path, stage: str) -> None:
    chan, pid = spawn_supervisor()
    with chan:
        chan.settimeout(60)
        control.send(chan, _launch_request(sleeper))
        while True:
            msg = control.recv(chan)
            if stage == "allocated" and "Start allocating" in str(msg.get("stderr", "")):
                wait_for(lambda: state.read_entries(), 20)
                break
            if stage == "booted" and "result" in msg:
                control.send(chan, {"ack": True})
                break
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 20)
    assert_idle(status())
    wait_for(lambda: not supervisors(nd_home), 10)
    assert not [d for d in (nd_home / "emulator" / "run").iterdir() if d.is_dir()]


# --- SIGSTOP ------------------------------------------------------------------------------------------


def test_stopped_supervisor_is_shown_unresponsive_and_keeps_its_resources(nd_home: Path, sleeper: Path) -> None:
    info = launch(sleeper)
    pid = int(info["ProcessID"])
    before = status()
    assert [e.state for e in before.enclaves] == ["RUNNING"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        st = status()
        took = time.monotonic() - started
        print(f"status with a stopped enclave process took {took:.2f}s")  # informational, not asserted
        assert [(e.enclave_id, e.state) for e in st.enclaves] == [(info["EnclaveID"], "UNRESPONSIVE")]
        assert held_cpus(st) == sorted(info["CPUIDs"]) == held_cpus(before)
        assert [p.held_by_enclaves for p in st.resources.hugepages] == [
            p.held_by_enclaves for p in before.resources.hugepages
        ]
        # the CPUs are not handed out again
        res = emu("run-enclave", "--eif-path", str(sleeper), "--memory", "64", "--cpu-ids", *map(str, info["CPUIDs"]))
        assert res.returncode == 39 and "[ E29 ]" in res.stderr
        # terminate --all does not claim success, and does not act later either
        res = emu("terminate-enclave", "--all")
        assert res.returncode == 11, res.stderr
        assert json.loads(res.stdout) == [] and "stopped" in res.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(3)  # time for a queued request to run, if one could
    st = status()
    assert [(e.enclave_id, e.state) for e in st.enclaves] == [(info["EnclaveID"], "RUNNING")]
    assert emu("terminate-enclave", "--enclave-id", str(info["EnclaveID"])).returncode == 0
    assert_idle(status())


def test_a_terminate_the_supervisor_reads_after_its_deadline_is_ignored(nd_home: Path, sleeper: Path) -> None:
    from core.channel.unixsock import short_path

    info = launch(sleeper)
    entry = next(e for e in state.read_entries() if e.enclave_id == info["EnclaveID"])
    os.kill(entry.supervisor_pid, signal.SIGSTOP)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(short_path(state.slot_dir(entry.slot) / "control.sock"))
            control.send(sock, {"cmd": "terminate", "deadline": time.time() + 0.5})
            time.sleep(1.0)
    finally:
        os.kill(entry.supervisor_pid, signal.SIGCONT)
    time.sleep(2)
    assert [e.state for e in status().enclaves] == ["RUNNING"]


# --- edited state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["garbage", "empty", "entry-removed", "cpus-edited", "truncated", "forged"])
def test_an_edited_enclave_table_never_orphans_a_running_enclave(nd_home: Path, sleeper: Path, edit: str) -> None:
    first = launch(sleeper)
    table = nd_home / "emulator" / "run" / "enclaves.json"
    data = json.loads(table.read_text())
    if edit == "garbage":
        table.write_bytes(b"\x00{not json")
    elif edit == "empty":
        table.write_text("")
    elif edit == "entry-removed":
        table.write_text(json.dumps({"enclaves": []}))
    elif edit == "cpus-edited":
        data["enclaves"][0]["cpu_ids"] = [7]
        data["enclaves"][0]["cid"] = 99
        table.write_text(json.dumps(data))
    elif edit == "truncated":
        table.write_text(table.read_text()[:40])
    elif edit == "forged":
        # an entry naming this test process: alive, but no supervisor wrote it
        me = os.getpid()
        fake = dict(data["enclaves"][0], enclave_id="i-0-encfeed", slot="feed", supervisor_pid=me,
                    supervisor_start=state.proc_start_time(me), enclave_pid=me,
                    enclave_start=state.proc_start_time(me), cpu_ids=[5, 6], cid=77)  # fmt: skip
        data["enclaves"].append(fake)
        table.write_text(json.dumps(data))
    res = emu("describe-enclaves")
    assert res.returncode == 0, res.stderr  # no E00
    assert [e["EnclaveID"] for e in json.loads(res.stdout)] == [first["EnclaveID"]]
    assert "nitro-emu: " in res.stderr  # what was repaired is said
    st = status()
    assert [e.enclave_id for e in st.enclaves] == [first["EnclaveID"]]
    assert held_cpus(st) == sorted(first["CPUIDs"])
    # the next launch gets other CPUs and another CID
    second = launch(sleeper)
    assert not set(second["CPUIDs"]) & set(first["CPUIDs"])
    assert second["EnclaveCID"] != first["EnclaveCID"]
    assert len(status().enclaves) == 2
    assert psutil.pid_exists(os.getpid())  # the forged entry's "enclave" (this test) was not killed
    assert emu("terminate-enclave", "--all").returncode == 0
    assert_idle(status())


# --- full disk ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "512k") -> Iterator[Path]:
    require(is_root(), "mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)  # fmt: skip
    require(res.returncode == 0, f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system until ENOSPC; returns the filler file (remove it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler


def test_full_disk_never_breaks_the_payload(nd_home: Path) -> None:
    configure(nd_home, cpu_count=4, memory_mib=1024)
    lc = Lifecycle()
    eif = nd_home / "payload.eif"
    lc.build(payload_request(str(eif)))
    with small_tmpfs(nd_home / "emulator" / "console"):
        # debug mode: only a debug-mode enclave has a console file (as on Nitro)
        info = lc.launch(LaunchRequest(eif_path=str(eif), memory_mib=256, cpu_count=2, debug_mode=True))
        transport = Transport(own_cid=PARENT_CID, emulated_dir=nd_home / "emulator" / "vsock")

        def call(method: str) -> Any:
            with BlockingClient(transport.connect(info.cid, 5005, timeout=10)) as client:
                return client.call(method, {}, timeout=20)

        wait_for(lambda: _ok(call, "health"), 60)
        filler = fill(nd_home / "emulator" / "console")
        # every request logs a line the console file cannot take: none may fail
        for _ in range(200):
            assert call("health")
        st = status()
        assert [e.state for e in st.enclaves] == ["RUNNING"]
        described = json.loads(emu("emulator-describe").stdout)[0]
        assert described["Console"]["DroppedBytes"] > 0
        assert described["Console"]["LastError"] == os.strerror(28)
        # space back: logging resumes, and the console says what was lost
        filler.unlink()
        assert call("health")
        text = (nd_home / "emulator" / "console" / f"{info.enclave_id}.log").read_text()
        wait_for(lambda: "were dropped: No space left on device" in
                 (nd_home / "emulator" / "console" / f"{info.enclave_id}.log").read_text(), 10)  # fmt: skip
        assert text
        lc.terminate_all()
    assert_idle(status())


def _ok(call: Any, method: str) -> bool:
    try:
        return bool(call(method))
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_full_disk_error_logs_still_say_what_happened(nd_home: Path, sleeper: Path) -> None:
    with small_tmpfs(nd_home / "emulator" / "log", "64k"):
        fill(nd_home / "emulator" / "log")
        res = emu("run-enclave", "--eif-path", str(nd_home / "missing.eif"), "--memory", "64", "--cpu-count", "2")
        # the enclave process cannot open the EIF (E19); the CLI got no answer from it (E39, exit 39)
        assert res.returncode == 39, res.stderr
        assert res.stderr.startswith("[ E19 ]") and "Failed connections: 1\n[ E39 ]" in res.stderr
        assert "The error log could not be written" in res.stderr and "No space left on device" in res.stderr
        assert "Failed to open the EIF file" in res.stderr or "missing.eif" in res.stderr
        assert "please provide the error log" not in res.stderr
        # nitrodeck's driver still learns the cause from the block itself (there is no log to read)
        bad = nd_home / "bad.eif"
        bad.write_bytes(b"not an enclave image file" * 200)
        with pytest.raises(NitroCliError) as info:
            # through the driver: Lifecycle.launch's own checks would refuse this EIF before nitro-emu runs
            NitroCli().run_enclave(LaunchRequest(eif_path=str(bad), memory_mib=64, cpu_count=2))
        assert info.value.log_path is None and info.value.detail, info.value.stderr
        assert_idle(status())


def test_a_deleted_record_and_table_entry_are_restored_by_the_running_supervisor(
    nd_home: Path, sleeper: Path
) -> None:
    info = launch(sleeper)
    entry = next(e for e in state.read_entries() if e.enclave_id == info["EnclaveID"])
    (state.slot_dir(entry.slot) / state.RECORD).unlink()
    (nd_home / "emulator" / "run" / "enclaves.json").write_text(json.dumps({"enclaves": []}))
    # the supervisor notices at its next idle tick and puts its entry back
    wait_for(lambda: [e.enclave_id for e in status().enclaves] == [info["EnclaveID"]], 20)
    assert held_cpus(status()) == sorted(info["CPUIDs"])
    assert emu("terminate-enclave", "--all").returncode == 0
    assert_idle(status())
