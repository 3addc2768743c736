"""The emulator answers describe-enclaves and emulator-describe inside nitrodeck's own process
(Backend.answer): the same stdout, stderr and exit status as its process, no process started, and a
bounded wait where a process would have been killed on the driver's timeout. nitro-cli, and any
backend whose argv is not this interpreter's own emulator, always runs as a process."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.backends.base import Backend
from core.backends.driver import CommandRecord, DriverCancelled, DriverTimeout, NitroCli
from core.backends.registry import select_backend
from core.ops.lifecycle import Lifecycle
from emulator.backend import EmulatorBackend
from tests.conftest import REPO
from tests.test_emulator_run import build, configure, emu, run, table


@pytest.fixture
def sleeper(nd_home: Path) -> Path:
    return build(nd_home, "echo enclave up\nexec sleep 300", "sleeper")


def answered(backend: Backend, *args: str) -> tuple[int, str, str]:
    got = backend.answer(list(args), time.monotonic() + 30)
    assert got is not None
    return got.exit_code, got.stdout, got.stderr


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_answers_match_the_process(nd_home: Path, sleeper: Path) -> None:
    configure(nd_home, cpu_count=4)
    backend = select_backend("emulator")
    for args in (["describe-enclaves"], ["describe-enclaves", "--metadata"], ["emulator-describe"]):
        assert answered(backend, *args) == (0, "[]\n", "")
    first = json.loads(run(sleeper, "--cpu-count", "2", "--enclave-name", "a").stdout)
    second = json.loads(run(sleeper, "--cpu-count", "2", "--enclave-name", "b", "--debug-mode").stdout)
    # one enclave process stopped: describe-enclaves warns on stderr and lists it UNRESPONSIVE
    stopped = next(e for e in table() if e.enclave_id == second["EnclaveID"]).supervisor_pid
    os.kill(stopped, signal.SIGSTOP)
    try:
        for args in (["describe-enclaves"], ["describe-enclaves", "--metadata"], ["emulator-describe"]):
            proc = emu(*args)
            code, out, err = answered(backend, *args)
            assert (code, json.loads(out)) == (proc.returncode, json.loads(proc.stdout))
            assert err == proc.stderr
        code, out, err = answered(backend, "describe-enclaves", "--metadata")
        states = {e["EnclaveID"]: e["State"] for e in json.loads(out)}
        assert states == {first["EnclaveID"]: "RUNNING", second["EnclaveID"]: "UNRESPONSIVE"}
        assert "is stopped (SIGSTOP)" in err and code == 0
    finally:
        os.kill(stopped, signal.SIGCONT)


def test_status_starts_no_process(nd_home: Path, sleeper: Path) -> None:
    configure(nd_home, cpu_count=2)
    launched = json.loads(run(sleeper, "--cpu-count", "2").stdout)
    records: list[CommandRecord] = []
    lifecycle = Lifecycle(select_backend("emulator"), on_command=records.append)
    before = children_cpu()
    st = lifecycle.status()
    # a nitro-emu process would be a waited-for child of this one, and a Python start costs tens of ms
    assert children_cpu() == before
    assert [e.enclave_id for e in st.enclaves] == [launched["EnclaveID"]]
    assert st.enclaves[0].eif_path == str(sleeper)  # emulator-describe's fact, merged in
    assert [(r.command, r.exit_code, r.ok) for r in records] == [
        ("nitro-emu describe-enclaves --metadata", 0, True),
        ("nitro-emu emulator-describe", 0, True),
    ]


def test_a_held_table_lock_times_out_or_is_cancelled(nd_home: Path) -> None:
    configure(nd_home)
    backend = select_backend("emulator")
    assert answered(backend, "describe-enclaves") == (0, "[]\n", "")  # creates the run folder and lock
    records: list[CommandRecord] = []
    driver = NitroCli(backend, timeout=0.3, on_command=records.append)
    fd = os.open(nd_home / "emulator" / "run" / "enclaves.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another nitro-emu in the middle of a launch, or stopped there
        started = time.monotonic()
        with pytest.raises(DriverTimeout) as info:
            driver.describe_enclaves()
        assert 0.3 <= time.monotonic() - started < 5
        assert "no answer within 0.3 s" in info.value.message
        driver.timeout = 60  # the caller's cancel (up on SIGTERM) ends the wait long before that
        driver.cancel = threading.Event()
        threading.Timer(0.2, driver.cancel.set).start()
        started = time.monotonic()
        with pytest.raises(DriverCancelled):
            driver.describe_enclaves()
        assert time.monotonic() - started < 5
    finally:
        os.close(fd)
    assert [(r.command, r.exit_code, r.error_code) for r in records] == [
        ("nitro-emu describe-enclaves", None, "ND-TIMEOUT"),
        ("nitro-emu describe-enclaves", None, "ND-CANCELLED"),
    ]
    driver.cancel = None
    driver.timeout = 30
    assert driver.describe_enclaves() == []


def test_only_our_own_emulator_answers(nd_home: Path) -> None:
    configure(nd_home)
    ours = select_backend("emulator")
    assert ours.answer(["describe-enclaves"], time.monotonic() + 30) is not None
    # a wrapper put in as argv, any other command, the real tool: run as a process
    wrapped = EmulatorBackend("emulator", ("/usr/bin/env", sys.executable, "-m", "emulator"), "nitro-emu", None)
    assert wrapped.answer(["describe-enclaves"], time.monotonic() + 30) is None
    assert ours.answer(["describe-eif", "--eif-path", "x.eif"], time.monotonic() + 30) is None
    assert ours.answer(["terminate-enclave", "--all"], time.monotonic() + 30) is None
    assert select_backend("real").answer(["describe-enclaves"], time.monotonic() + 30) is None
    # and the process still answers what the driver asks of it
    drv = NitroCli(wrapped)
    assert drv.describe_enclaves() == []


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_read_only_answers_write_nothing_like_the_process(nd_home: Path) -> None:
    """A read-only driver tells nitro-emu NITRODECK_READ_ONLY=1; answered in-process it is told the same,
    for that call only: on a home never used, nothing is created."""
    backend = select_backend("emulator")
    env = {**os.environ, "NITRODECK_READ_ONLY": "1"}
    for args in (["describe-enclaves"], ["describe-enclaves", "--metadata"], ["emulator-describe"]):
        proc = subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=60)
        got = backend.answer(args, time.monotonic() + 30, read_only=True)
        assert got is not None and (got.exit_code, got.stdout, got.stderr) == (proc.returncode, proc.stdout, proc.stderr)
    assert tree(nd_home) == []
    records: list[CommandRecord] = []
    assert NitroCli(backend, read_only=True, on_command=records.append).describe_enclaves(metadata=True) == []
    assert tree(nd_home) == [] and [r.ok for r in records] == [True]
    # the next caller in this process is not read-only: its describe makes the run folder and lock
    assert answered(backend, "describe-enclaves") == (0, "[]\n", "")
    assert "emulator/run/enclaves.lock" in tree(nd_home)
