"""nitro-emu end to end: real supervisors, enclave processes, sockets and namespaces under an isolated home."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.channel.unixsock import short_path
from emulator import state
from emulator.allocator import snapshot
from emulator.instance import load_instance
from tests.conftest import is_root, require, wait_for

REPO = Path(__file__).resolve().parent.parent
RUN_KEYS = ["EnclaveName", "EnclaveID", "ProcessID", "EnclaveCID", "NumberOfCPUs", "CPUIDs", "MemoryMiB"]
DESCRIBE_KEYS = RUN_KEYS + ["State", "Flags", "Measurements"]


def emu(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def configure(home: Path, *, cores: int = 4, threads: int = 2, memory_mib: int = 512, cpu_count: int = 2) -> None:
    etc = home / "emulator" / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "allocator.yaml").write_text(f"---\nmemory_mib: {memory_mib}\ncpu_count: {cpu_count}\n")
    (home / "emulator" / "instance.yaml").write_text(
        f"instance_id: i-0123456789abcdef0\nvcpus: {cores * threads}\ncores: {cores}\nthreads_per_core: {threads}\n"
    )


def build(home: Path, script: str, name: str = "app", *extra: str) -> Path:
    """An EIF whose command is a shell script inside the rootfs (so /app/run.sh is rewritten to the copy)."""
    import importlib.util

    require(importlib.util.find_spec("core.eif.build") is not None, "core.eif.build (EIF builder) is not in the tree yet")
    rootfs = home / f"rootfs-{name}"
    (rootfs / "app").mkdir(parents=True)
    run = rootfs / "app" / "run.sh"
    run.write_text("#!/bin/sh\n" + script + "\n")
    run.chmod(0o755)
    out = home / f"{name}.eif"
    res = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "/app/run.sh", "--output-file", str(out), "--name", name, *extra)
    assert res.returncode == 0, res.stderr
    assert list(json.loads(res.stdout)) == ["Measurements"]
    return out


@pytest.fixture
def sleeper(nd_home: Path) -> Path:
    return build(nd_home, "echo enclave up\nexec sleep 300", "sleeper")


def run(eif: Path, *extra: str, memory: str = "64") -> subprocess.CompletedProcess[str]:
    return emu("run-enclave", "--eif-path", str(eif), "--memory", memory, *extra)


def table() -> list[state.Entry]:
    return state.read_entries()


def enclave_pid(enclave_id: str) -> int:
    entry = next(e for e in table() if e.enclave_id == enclave_id)
    return entry.enclave_pid


def home_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get("NITRODECK_HOME") == str(home):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def first_line(res: subprocess.CompletedProcess[str]) -> str:
    """The first error line (progress lines such as "Start allocating memory..." may come before)."""
    return next((line for line in res.stderr.splitlines() if line.startswith("[ E")), "")


def assert_nothing_left(home: Path, enclave_ids: list[str] = ()) -> None:  # type: ignore[assignment]
    assert table() == []
    run_dir = home / "emulator" / "run"
    # "exits": the supervisors' exit records the journal reads uptimes from (emulator/exits.py)
    assert {p.name for p in run_dir.iterdir()} <= {"enclaves.json", "enclaves.lock", "allocator.json", "allocator.lock", "exits"}
    wait_for(lambda: not home_processes(home), timeout=10)
    snap = snapshot()
    assert snap.free_cpus == snap.pool_cpus and snap.free_memory_mib == snap.pool_memory_mib
    mine = {f"nitrodeck-{eid.split('-enc')[-1]}" for eid in enclave_ids}
    if is_root() and mine:
        own_rel = Path("/proc/self/cgroup").read_text().split(":memory:")[1].split()[0].lstrip("/")
        own = Path("/sys/fs/cgroup/memory") / own_rel
        assert not [p for p in own.iterdir() if p.name in mine]


def test_run_describe_terminate(nd_home: Path, sleeper: Path) -> None:
    res = run(sleeper, "--cpu-count", "2", "--enclave-cid", "0")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "The enclave CID will be auto-generated as the provided CID is 0",
        "Start allocating memory...",
        "Started enclave with enclave-cid: 16, memory: 64 MiB, cpu-ids: [1, 5]",
    ]
    info = json.loads(res.stdout)
    assert list(info) == RUN_KEYS
    assert res.stdout == json.dumps(info, indent=2) + "\n"
    assert info["EnclaveName"] == "sleeper" and info["CPUIDs"] == [1, 5] and info["MemoryMiB"] == 64
    assert info["EnclaveID"].startswith(load_instance().instance_id + "-enc")
    assert psutil.pid_exists(info["ProcessID"])

    desc = emu("describe-enclaves", "--metadata")
    [item] = json.loads(desc.stdout)
    # json_output.rs EnclaveDescribeInfo: nothing but nitro-cli's keys
    assert list(item) == RUN_KEYS + ["State", "Flags", "Measurements", "ImageName", "ImageVersion", "Metadata"]
    assert item["State"] == "RUNNING" and item["Flags"] == "NONE" and item["ImageName"] == "sleeper"
    assert list(item["Measurements"]) == ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
    [extra] = json.loads(emu("emulator-describe").stdout)
    assert extra["EnclaveID"] == info["EnclaveID"] and extra["EifPath"] == str(sleeper)
    iso = extra["Isolation"]
    pid = enclave_pid(info["EnclaveID"])
    assert iso["HostCPUs"] == sorted(os.sched_getaffinity(pid))
    assert iso["HostCPUs"] == sorted({c % (os.cpu_count() or 1) for c in (1, 5)})
    assert os.getpgid(pid) == pid  # own process group
    eif_desc = json.loads(emu("describe-eif", "--eif-path", str(sleeper)).stdout)
    assert eif_desc["Measurements"] == item["Measurements"]
    assert iso["NetworkNamespace"] == (os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"))

    # garbage on the control socket gets an error reply or a closed connection, never a dead supervisor
    control_path = nd_home / "emulator" / "run" / info["EnclaveID"].split("-enc")[1] / "control.sock"
    for junk in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x00\x0e" + b'{"cmd":"boom"}', b"\x00\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(short_path(control_path))
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(65536)
            assert reply == b"" or b"error" in reply
    assert len(json.loads(emu("describe-enclaves").stdout)) == 1

    term = emu("terminate-enclave", "--enclave-id", info["EnclaveID"])
    assert term.returncode == 0
    assert term.stderr == f"Successfully terminated enclave {info['EnclaveID']}.\n"
    assert json.loads(term.stdout) == {"EnclaveName": "sleeper", "EnclaveID": info["EnclaveID"], "Terminated": True}
    assert list(json.loads(term.stdout)) == ["EnclaveName", "EnclaveID", "Terminated"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert_nothing_left(nd_home, [info["EnclaveID"]])
    assert emu("terminate-enclave", "--all").stdout == "[]\n"
    log_lines = (nd_home / "emulator" / "log" / "nitro_enclaves.log").read_text().splitlines()
    pattern = re.compile(r"^\[(nitro-cli|enc-[0-9a-f]+|enc):\d+\]\[(INFO|WARN|ERROR)\]\[[0-9T:.-]+Z\]\[emulator/\w+\.py:\d+\] ")
    assert log_lines and all(pattern.match(line) for line in log_lines)
    assert any(f"released resources of {info['EnclaveID']}" in line for line in log_lines)


def test_launch_errors_are_wrapped_and_release_everything(nd_home: Path, sleeper: Path) -> None:
    """Each run-enclave failure of the enclave process, byte for byte as nitro-cli prints it (texts:
    tests/nitro_cli_texts.py): E26 (resource_manager.rs:487), E27 (:404), E22/E21/E20 (cpu_info.rs:70,
    :115, :102), E29 from NE_START_ENCLAVE (:720: an odd count, no vCPU, half a core)."""
    from tests import nitro_cli_texts as T
    from tests.test_emulator_conformance import assert_stderr, block, ceil_div, fill, wrapped

    need = str(ceil_div(ceil_div(sleeper.stat().st_size, 1024), 1024) * 4)
    cases = [
        (("--cpu-count", "2"), "0", "E26", ("memory", "0", need)),
        (("--cpu-count", "2"), "1024", "E27", ("memory", "1024")),
        (("--cpu-count", "4"), "64", "E22", ("cpu-count", "4")),
        (("--cpu-ids", "1", "2"), "64", "E21", ("cpu-ids", "2")),
        (("--cpu-ids", "1", "1"), "64", "E20", ("cpu-ids", "1")),
        (("--cpu-count", "1"), "64", "E29", ()),
        (("--cpu-count", "0"), "64", "E29", ()),
        (("--cpu-ids", "1"), "64", "E29", ()),  # half a core
    ]
    for flags, memory, code, info in cases:
        res = run(sleeper, *flags, memory=memory)
        lines = res.stderr.splitlines()
        inner = [line for line in lines if line.startswith("[ E")]
        assert res.returncode == 39, res.stderr
        allocating = re.escape("Start allocating memory...\n") if code in ("E27", "E29") else ""
        assert_stderr(res, allocating + wrapped(block(code, fill(T.DETAIL[code], *info))))
        assert inner[1].startswith("[ E39 ] Enclave process connection failure.")
        assert lines[lines.index(inner[1]) - 1] == "Failed connections: 1"
        # E26 is found before allocation starts; E27 and E29 after "Start allocating memory..."
        assert ("Start allocating memory..." in lines) == (inner[0][:7] in ("[ E27 ]", "[ E29 ]"))
        logs = [Path(line.split('"')[1]) for line in lines if line.startswith("If you open a support ticket")]
        assert len(logs) == 2 and all(p.exists() for p in logs)
        assert res.stdout == ""
    # a broken allocator.yaml changes nothing until the allocator restarts, and then it says why it
    # refuses the file and keeps the pools it had
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\ncpu_count: 2\n")
    restart = emu("restart-allocator")
    assert (restart.returncode, restart.stdout) == (1, "Error: Config error: missing memory reservation (`memory_mib`).\n")
    assert run(sleeper, "--cpu-count", "2").returncode == 0
    assert emu("terminate-enclave", "--all").returncode == 0
    assert_nothing_left(nd_home)


def test_command_not_found_boots_then_ends_and_leaks_nothing(nd_home: Path) -> None:
    """The real init sends the boot heartbeat before it reads /cmd: run-enclave succeeds, then the
    command fails, init says so on the console and reboots, and the enclave is gone."""
    import importlib.util

    require(importlib.util.find_spec("core.eif.build") is not None, "core.eif.build (EIF builder) is not in the tree yet")
    rootfs = nd_home / "rootfs-bad"
    rootfs.mkdir()
    eif = nd_home / "bad.eif"
    built = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "/no/such/program --flag", "--output-file", str(eif))
    assert built.returncode == 0, built.stderr
    res = run(eif, "--cpu-count", "2", "--debug-mode")
    assert res.returncode == 0, res.stderr
    eid = json.loads(res.stdout)["EnclaveID"]
    wait_for(lambda: json.loads(emu("describe-enclaves").stdout) == [], timeout=20)
    assert_nothing_left(nd_home)
    # the console of the debug-mode enclave is kept and says what init said (init/init.c)
    text = (nd_home / "emulator" / "console" / f"{eid}.log").read_text()
    assert "Linux version 4.14.256" in text
    assert "execvpe: /no/such/program: No such file or directory\nchild exited with error\n" in text
    assert "reboot: Restarting system" in text


def test_console_streams_until_terminate(nd_home: Path) -> None:
    eif = build(nd_home, "i=0\nwhile [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done", "ticker")
    res = run(eif, "--cpu-count", "2", "--debug-mode", "--enclave-name", "tick")
    assert res.returncode == 0, res.stderr
    eid = json.loads(res.stdout)["EnclaveID"]
    con = subprocess.Popen(
        [sys.executable, "-m", "emulator", "console", "--enclave-name", "tick"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    try:
        assert con.stdout is not None
        lines = [con.stdout.readline().decode() for _ in range(2)]
        assert lines == ["Connecting to the console for enclave 16...\n", "Successfully connected to the console.\n"]
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([s for s in seen if s.startswith("tick")]) < 3:
            seen.append(con.stdout.readline().decode())
        assert seen[0].startswith("[    0.000000] Linux version 4.14.256")
        assert sum(s.startswith("tick ") for s in seen) >= 3
        # a second console with --disconnect-timeout ends by itself while the enclave runs on
        timed = emu("console", "--enclave-id", eid, "--disconnect-timeout", "1")
        assert timed.returncode == 0 and "tick 0\n" in timed.stdout and timed.stdout.startswith("Connecting")
        assert emu("terminate-enclave", "--enclave-name", "tick").returncode == 0
        assert con.wait(timeout=20) == 0
    finally:
        if con.poll() is None:
            con.kill()
            con.wait()
    # terminated: console by ID is E11 like nitro-cli, the file is kept at console/<id>.log
    gone = emu("console", "--enclave-id", eid)
    assert gone.returncode == 11 and first_line(gone).startswith("[ E11 ]")
    assert "tick 0" in (nd_home / "emulator" / "console" / f"{eid}.log").read_text()


def test_console_needs_debug_mode(nd_home: Path, sleeper: Path) -> None:
    assert run(sleeper, "--cpu-count", "2").returncode == 0
    res = emu("console", "--enclave-name", "sleeper")
    # main.rs:262: the flags say no debug mode -> EnclaveConsoleConnectionFailure, not wrapped
    from tests import nitro_cli_texts as T
    from tests.test_emulator_conformance import assert_stderr, block

    assert (res.returncode, res.stdout) == (44, "")
    assert_stderr(res, block("E44", T.DETAIL["E44"]))
    log = Path([line for line in res.stderr.splitlines() if "support ticket" in line][0].split('"')[1])
    assert "The enclave was not started with the debug flag set, include '--debug-mode' in the run-enclave command" in log.read_text()
    assert emu("terminate-enclave", "--all").returncode == 0


def test_killed_supervisor_is_reported_and_cleaned_up(nd_home: Path, sleeper: Path) -> None:
    res = run(sleeper, "--cpu-ids", "5", "1")
    info = json.loads(res.stdout)
    assert info["CPUIDs"] == [5, 1] and info["NumberOfCPUs"] == 2  # --cpu-ids keeps the given order
    pid = enclave_pid(info["EnclaveID"])
    os.kill(info["ProcessID"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(info["ProcessID"]) or psutil.Process(info["ProcessID"]).status() == psutil.STATUS_ZOMBIE)
    desc = emu("describe-enclaves")
    assert desc.stdout == "[]\n"
    assert "nitro-emu: " in desc.stderr and info["EnclaveID"] in desc.stderr and str(info["ProcessID"]) in desc.stderr
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    assert_nothing_left(nd_home)
    # reported once: the next describe is quiet
    again = emu("describe-enclaves")
    assert again.stdout == "[]\n" and again.stderr == ""


def test_four_enclaves_fifth_fails_names_and_cids(nd_home: Path, sleeper: Path) -> None:
    configure(nd_home, cores=6, threads=1, memory_mib=512, cpu_count=5)
    results = [run(sleeper, "--cpu-count", "1") for _ in range(3)]
    results.append(run(sleeper, "--cpu-count", "1", "--enclave-cid", "16"))
    assert [r.returncode for r in results[:3]] == [0, 0, 0]
    infos = [json.loads(r.stdout) for r in results[:3]]
    assert [i["EnclaveName"] for i in infos] == ["sleeper", "sleeper_1", "sleeper_2"]
    assert [i["EnclaveCID"] for i in infos] == [16, 17, 18]
    assert results[3].returncode == 39 and first_line(results[3]).startswith("[ E29 ]")  # CID 16 taken
    fourth = run(sleeper, "--cpu-count", "1", "--enclave-cid", "40", "--enclave-name", "sleeper_1")
    assert fourth.returncode == 0 and json.loads(fourth.stdout)["EnclaveName"] == "sleeper_1_1"
    fifth = run(sleeper, "--cpu-count", "1")
    # NE_CREATE_VM fails (no slot, resource_manager.rs:518): E29, before any memory is allocated
    from tests import nitro_cli_texts as T
    from tests.test_emulator_conformance import assert_stderr, block, wrapped

    assert (fifth.returncode, fifth.stdout) == (39, "")
    assert_stderr(fifth, wrapped(block("E29", T.DETAIL["E29"])))
    dup = emu("terminate-enclave", "--enclave-name", "nobody")
    assert dup.returncode == 58
    out = emu("terminate-enclave", "--all")
    assert len(json.loads(out.stdout)) == 4
    assert_nothing_left(nd_home)


def test_twenty_concurrent_launches_for_room_of_four(nd_home: Path, sleeper: Path) -> None:
    configure(nd_home, cores=5, threads=2, memory_mib=256, cpu_count=8)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "emulator", "run-enclave", "--eif-path", str(sleeper), "--memory", "64", "--cpu-count", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )
        for _ in range(20)
    ]
    outs = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    ok = [json.loads(out) for rc, out, _ in outs if rc == 0]
    failed = [err for rc, _, err in outs if rc != 0]
    assert len(ok) == 4 and len(failed) == 16
    assert all(rc in (0, 39) for rc, _, _ in outs)
    for err in failed:
        assert "Traceback" not in err
        assert err.splitlines()[-1].startswith("If you open a support ticket")
        assert "[ E39 ]" in err and any(c in err for c in ("[ E27 ]", "[ E29 ]"))
    entries = table()
    assert sorted(e.enclave_id for e in entries) == sorted(i["EnclaveID"] for i in ok)
    # the 16 losers' supervisors are gone: 4 supervisors + 4 enclave processes remain
    wait_for(lambda: len(home_processes(nd_home)) == 8, timeout=15)
    assert sorted(p.pid for p in home_processes(nd_home) if "emulator.supervisor" in " ".join(p.cmdline())) == sorted(
        i["ProcessID"] for i in ok
    )
    held = [c for e in entries for c in e.cpu_ids]
    assert len(held) == len(set(held)) == 8
    snap = snapshot()
    assert snap.free_cpus == [] and snap.free_memory_mib == 0 and len(snap.enclaves) == 4
    assert sorted(c for i in ok for c in i["CPUIDs"]) == sorted(held)
    out = emu("terminate-enclave", "--all")
    assert sorted(t["EnclaveID"] for t in json.loads(out.stdout)) == sorted(i["EnclaveID"] for i in ok)
    assert_nothing_left(nd_home, [i["EnclaveID"] for i in ok])


def test_enclave_environment_with_attach_console(nd_home: Path) -> None:
    script = 'echo "PYTHONPATH=$PYTHONPATH"\nenv | grep ^NITRODECK_ | sort\necho "CWD=$(pwd)"\necho done-env\nexec sleep 300'
    eif = build(nd_home, script, "envy", "--env", "PYTHONPATH=/app:/nowhere")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "run-enclave", "--eif-path", str(eif), "--memory", "64",
         "--cpu-count", "2", "--attach-console"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "done-env\n" not in lines:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        info = json.loads(text[: text.index("}\n") + 2])
        assert list(info) == RUN_KEYS
        assert "Connecting to the console for enclave 16...\nSuccessfully connected to the console.\n" in text
        entry = table()[0]
        rootfs = nd_home / "emulator" / "run" / entry.slot / "rootfs" / "rootfs"
        assert f"PYTHONPATH={rootfs}/app:/nowhere\n" in text  # image paths point into the rootfs copy
        assert f"CWD={rootfs}\n" in text
        assert "NITRODECK_ENCLAVE_CID=16\n" in text
        assert f"NITRODECK_ENCLAVE_ID={info['EnclaveID']}\n" in text
        assert f"NITRODECK_HOME={nd_home}\n" in text
        assert f"NITRODECK_VSOCK_DIR={nd_home / 'emulator' / 'vsock'}\n" in text
        nsm_line = [line for line in lines if line.startswith("NITRODECK_NSM_SOCKET=")]
        assert nsm_line and Path(nsm_line[0].split("=", 1)[1].strip()).exists()
        assert emu("terminate-enclave", "--all").returncode == 0
        assert proc.wait(timeout=20) == 0  # the attached console ends with the enclave
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_nothing_left(nd_home, [info["EnclaveID"]])


def test_console_file_is_bounded(nd_home: Path) -> None:
    from emulator.console import KEEP_BYTES, TRIM_AT, ConsoleWriter, console_file

    path = console_file("i-0-enc1")
    writer = ConsoleWriter(path)
    read_end, write_end = os.pipe()
    writer.pump(read_end)
    block = b"x" * 65535 + b"\n"
    with os.fdopen(write_end, "wb") as fh:
        for _ in range(TRIM_AT // len(block) + 20):
            fh.write(block)
        fh.write(b"the end\n")
    writer.close(wait=10)
    data = path.read_bytes()
    assert KEEP_BYTES <= len(data) <= TRIM_AT and data.endswith(b"x\nthe end\n")


def test_kept_consoles_of_ended_enclaves_are_capped(nd_home: Path) -> None:
    """Each console file is bounded, and so is their number: the oldest consoles of ended enclaves go
    (a relaunch loop would otherwise fill the disk); live enclaves' consoles always stay."""
    from emulator.console import KEEP_ENDED, console_file, prune_kept

    paths = [console_file(f"i-0-enc{i:x}") for i in range(KEEP_ENDED + 5)]
    for i, path in enumerate(paths):
        path.write_bytes(b"x\n")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    live = {"i-0-enc0", "i-0-enc1"}  # the two oldest files, but their enclaves still run
    prune_kept(live)
    left = {p.name for p in paths if p.exists()}
    assert {"i-0-enc0.log", "i-0-enc1.log"} <= left
    assert len(left) == KEEP_ENDED + 2
    assert not any(paths[i].exists() for i in range(2, 5)) and paths[5].exists() and paths[-1].exists()
    (console_file("i-0-enc1").parent / "notes.txt").write_text("not a console")
    prune_kept(live)
    assert (console_file("i-0-enc1").parent / "notes.txt").exists()


def test_enclave_gets_own_network_namespace_and_memory_cgroup(nd_home: Path) -> None:
    require(is_root(), "network namespaces and cgroups need root")
    # the setsid child leaves the enclave's process group; the cgroup still catches it at terminate
    eif = build(nd_home, "setsid sleep 301 &\nexec sleep 300", "netns")
    info = json.loads(run(eif, "--cpu-count", "2").stdout)
    pid = enclave_pid(info["EnclaveID"])
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    # only loopback, and it is up
    links = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link"], capture_output=True, text=True)
    names = [line.split(":")[1].strip() for line in links.stdout.splitlines()]
    assert names == ["lo"] and "UP" in links.stdout.split("<")[1].split(">")[0].split(",")
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    slot = info["EnclaveID"].split("-enc")[1]
    assert f"nitrodeck-{slot}" in cgroup
    [item] = json.loads(emu("emulator-describe").stdout)
    assert item["Isolation"]["NetworkNamespace"] is True
    assert item["Isolation"]["MemoryLimit"] == {"Kind": "cgroup-v1", "Bytes": 64 * 1024 * 1024}
    wait_for(lambda: any("301" in " ".join(p.cmdline()) for p in home_processes(nd_home)))
    assert emu("terminate-enclave", "--enclave-name", "netns").returncode == 0
    assert_nothing_left(nd_home, [info["EnclaveID"]])
