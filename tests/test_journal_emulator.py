"""The journal and the causes against the real emulator: exits recorded once (also with two watchers),
conflicts named before nitro-cli runs, error-log details behind generic codes, pins by EIF."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.backends.driver import NitroCli
from core.errors import NitroCliError
from core.models import BuildRequest, LaunchRequest
from core.ops.journal import Journal, enclave_from_event
from core.ops.lifecycle import Lifecycle
from core.ops.preflight import DockerUnreachable, LaunchConflict
from tests.agent_world import script_eif
from tests.conftest import REPO, is_root, require, wait_for
from tests.test_e2e_emulator import world_processes, write_world
from tests.test_journal import fill

pytestmark = pytest.mark.slow


def events_of(home: Path) -> list[dict]:
    return [json.loads(x) for x in (home / "journal.jsonl").read_text().splitlines() if x.strip()]


def watcher() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "console", "events", "--follow", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy(),
    )


def test_exits_recorded_once_with_two_watchers(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    lc = Lifecycle()
    crash = script_eif(lc, tmp_path, "crash", "echo about to crash\nsleep 0.3\nexit 3\n")
    clean = script_eif(lc, tmp_path, "clean", "echo working\nsleep 2\necho done\nexit 0\n")
    watchers = [watcher(), watcher()]
    try:
        a = lc.launch(LaunchRequest(str(crash), 64, cpu_count=2, debug_mode=True, name="crasher"))
        b = lc.launch(LaunchRequest(str(clean), 64, cpu_count=2, name="finisher"))

        def exits() -> list[dict]:
            return [e for e in events_of(nd_home) if e["event"] == "exited"]

        wait_for(lambda: len(exits()) >= 2, timeout=60)
        time.sleep(2.5)  # both watchers poll again: nothing more may be written
        by_id = {e["enclave_id"]: e for e in exits()}
        assert len(exits()) == 2 and set(by_id) == {a.enclave_id, b.enclave_id}
        crashed, finished = by_id[a.enclave_id], by_id[b.enclave_id]
        assert crashed["name"] == "crasher" and crashed["exit_status"] == 3 and crashed["uptime_source"] == "backend"
        assert crashed["eif_path"] == str(crash) and len(crashed["pcr0"]) == 96
        assert "about to crash" in crashed["last_console"]  # debug mode: the kept console's tail
        assert finished["exit_status"] == 0 and "last_console" not in finished  # not debug: no console
        assert 0 <= crashed["uptime_s"] < finished["uptime_s"]
    finally:
        for w in watchers:
            w.terminate()
    outputs = [w.communicate(timeout=20)[0] for w in watchers]
    for out in outputs:  # each watcher streamed both exits
        seen = [json.loads(x) for x in out.splitlines() if x.strip()]
        assert {e["enclave_id"] for e in seen if e["event"] == "exited"} == {a.enclave_id, b.enclave_id}
    # console --log works by name once the enclave is gone
    done = subprocess.run([sys.executable, "-m", "console", "console", "crasher", "--log"], cwd=REPO,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert done.returncode == 0 and "about to crash" in done.stdout
    wait_for(lambda: world_processes(nd_home) == [], timeout=20)


def test_causes_named_before_and_after_nitro_cli(nd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_world(nd_home)
    lc = Lifecycle()
    eif = script_eif(lc, tmp_path, "svc", "while true; do sleep 1; done\n")
    first = lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, cid=20, name="first"))

    # a CID clash: refused by nitrodeck, naming the enclave that holds it
    with pytest.raises(LaunchConflict) as clash:
        lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, cid=20, name="second"))
    assert "CID 20" in clash.value.message and "first" in clash.value.message
    assert clash.value.cli_code == "E29" and clash.value.exit_status == 29

    # the same clash past the check (straight to nitro-emu): the error log's detail picks the hint
    with pytest.raises(NitroCliError) as raw:
        NitroCli(lc.backend).run_enclave(LaunchRequest(str(eif), 64, cpu_count=2, cid=20))
    assert raw.value.code == "E29" and raw.value.detail and "CID 20" in raw.value.detail
    assert raw.value.hint and "CID" in raw.value.hint and "odd" not in raw.value.hint
    assert "error log says: " in str(raw.value)

    # a CPU outside the pool, and one held by a running enclave
    with pytest.raises(LaunchConflict) as outside:
        lc.launch(LaunchRequest(str(eif), 64, cpu_ids=[30, 31]))
    assert outside.value.cli_code == "E21" and "CPU 30 is not in the enclave CPU pool" in outside.value.message
    with pytest.raises(LaunchConflict) as held:
        lc.launch(LaunchRequest(str(eif), 64, cpu_ids=first_cpus(lc, first.enclave_id)))
    assert "held by the running enclave first" in held.value.message

    # more memory than the free hugepages
    with pytest.raises(LaunchConflict) as memory:
        lc.launch(LaunchRequest(str(eif), 4096, cpu_count=2))
    assert memory.value.cli_code == "E27" and "free hugepages" in memory.value.message

    # a Docker daemon that is down: build refuses before it starts...
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(DockerUnreachable) as down:
        lc.build(BuildRequest(str(tmp_path / "d.eif"), docker_uri="busybox:latest"))
    assert "Docker daemon does not answer" in down.value.message
    # ...and past the check, nitro-emu's E50 carries the daemon in its error log: so does the hint
    with pytest.raises(NitroCliError) as e50:
        NitroCli(lc.backend).build_enclave(BuildRequest(str(tmp_path / "d.eif"), docker_uri="busybox:latest"))
    assert e50.value.code in ("E48", "E50") and "Docker daemon is unreachable" in (e50.value.hint or "")
    assert "registry" not in (e50.value.hint or "")

    failed = [e for e in events_of(nd_home) if e["event"] == "launch-failed"]
    assert len(failed) == 4 and all(e["code"] == "ND-LAUNCH" for e in failed)
    lc.terminate("first")
    assert events_of(nd_home)[-1]["event"] == "terminated"
    assert not [e for e in events_of(nd_home) if e["event"] == "exited"]  # a terminate is not an exit


def first_cpus(lc: Lifecycle, enclave_id: str) -> list[int]:
    return next(e.cpu_ids for e in lc.describe() if e.enclave_id == enclave_id)


def test_pins_survive_exit_and_relaunch_under_another_name(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    lc = Lifecycle()
    eif = script_eif(lc, tmp_path, "payments", "sleep 0.5\nexit 1\n")
    pin = lc.pin_eif(str(eif))
    assert pin.key == "payments" and pin.eif_path == str(eif)
    a = lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, name="alpha"))
    wait_for(lambda: lc.describe() == [] and any(e["event"] == "exited" for e in events_of(nd_home)), timeout=30)
    [gone] = [enclave_from_event(e) for e in lc.journal.read() if e.event == "exited"]
    assert gone is not None and gone.enclave_id == a.enclave_id
    judged = lc.judge(gone, record=False)
    assert judged.verdict == "match" and judged.key == "payments"
    b = lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, name="beta"))
    running = [e for e in lc.describe() if e.enclave_id == b.enclave_id]
    if running:  # it may have exited already; judge from the journal then
        judged = lc.judge(running[0])
        assert judged.verdict == "match" and judged.key == "payments"
    # an explicit key for another EIF file: judged by that file's pin, under its own key
    other = script_eif(lc, tmp_path, "payments2", "sleep 30\n")
    lc.pin_eif(str(other), "pay-canary")
    c = lc.launch(LaunchRequest(str(other), 64, cpu_count=2, name="gamma"))
    [gamma] = [e for e in lc.describe() if e.enclave_id == c.enclave_id]
    assert lc.judge(gamma).key == "pay-canary"
    lc.terminate_all()


def test_torn_journal_and_full_disk_never_lose_a_launch(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    warnings: list[str] = []
    lc = Lifecycle(on_warning=warnings.append)
    eif = script_eif(lc, tmp_path, "steady", "sleep 30\n")
    with open(nd_home / "journal.jsonl", "ab") as fh:
        fh.write(b'{"time": "2026-12-02T10:00:00Z", "ev')  # torn by a crash
    run = lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, name="after-torn"))
    events = lc.events()  # the torn line was ended by the launch's own event: now it is skipped, with a warning
    assert [e.event for e in events][-1] == "launched" and events[-1].enclave_id == run.enclave_id
    assert any("unreadable line" in w for w in warnings)

    require(is_root(), "mounting a small tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)], check=True)
    try:
        fill(mount)
        full = Lifecycle(journal=Journal(mount / "journal.jsonl", warn=warnings.append))
        run2 = full.launch(LaunchRequest(str(eif), 64, cpu_count=2, name="disk-full"))
        assert any(e.enclave_id == run2.enclave_id for e in full.describe())  # launched all the same
        assert any("No space left" in w or "short write" in w or "cannot open" in w for w in warnings), warnings
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    lc.terminate_all()


def test_another_backends_launch_is_not_taken_for_an_exit(nd_home: Path) -> None:
    """One home, two backends (an operator on a Nitro parent tries `--backend emulator`): the emulator's
    describe says nothing about the enclaves nitro-cli launched, so none of them is recorded as exited."""
    write_world(nd_home)
    lc = Lifecycle()
    lc.journal.append("launched", enclave_id="i-0real-enc1111111111111111", name="prod", backend="real")
    lc.journal.append("launched", enclave_id="i-0emu-enc2222222222222222", name="gone", backend="emulator")
    lc.describe()
    exited = [e.enclave_id for e in lc.journal.read() if e.event == "exited"]
    assert exited == ["i-0emu-enc2222222222222222"]
    assert "i-0real-enc1111111111111111" in lc.journal.open_launches()
