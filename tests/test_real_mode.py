"""The real backend on a stand-in Nitro parent: nitrodeck's CLI as an operator runs it, against the
stand-in nitro-cli 1.5.0 (tests/fake_nitro_cli: nitro-cli's own texts, error blocks and error logs)
with the device and sysfs configured through NITRODECK_DEVICE and NITRODECK_SYSFS.

Every operation (status, describe, describe-eif, build, launch, console, terminate by ID, name and
--all) and the day-one failures: read-only for each reason, no driver, a Docker daemon that does not
answer, no CPUs left in the pool, too few CPUs or hugepages, a partial describe, a console without
debug mode, a reader that leaves the console early.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.backends.driver import NitroCli, error_log_subactions
from core.backends.real import real_backend
from core.errors import NitroCliError
from core.models import BuildRequest, LaunchRequest
from tests.conftest import REPO, is_root, require, wait_for
from tests.real_world import FAKE_DIR, INSTANCE_ID, PAGES_2M, RealWorld, make_world


@pytest.fixture
def world(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> RealWorld:
    return make_world(nd_home, monkeypatch)


def launch(world: RealWorld, *extra: str, memory: str = "128", expect: int = 0) -> dict:
    return world.cli_json("launch", "--eif-path", str(world.eif()), "--memory", memory, *extra, expect=expect)


def test_status_reads_the_configured_device_and_sysfs(world: RealWorld) -> None:
    st = world.cli_json("status")
    assert st["backend"] == "real" and st["read_only"] is False and st["read_only_reason"] is None
    assert st["instance_id"] == INSTANCE_ID  # the asset tag under $NITRODECK_SYSFS
    assert st["driver_loaded"] is True and st["allocator_error"] is None
    assert st["cpu_pool"] == {"source": "sysfs", "pool": [1, 3], "free": [1, 3], "held": {}}
    assert [(p["size_kb"], p["node"], p["total"], p["free"], p["held_by_enclaves"]) for p in st["hugepages"]] == [
        (1048576, 0, 0, 0, 0),
        (2048, 0, PAGES_2M, PAGES_2M, 0),
    ]
    text = world.cli("status")
    assert text.returncode == 0 and f"instance:  {INSTANCE_ID}\nread-only: no\n" in text.stdout


def test_launch_describe_terminate_hold_and_give_back_exact_resources(world: RealWorld) -> None:
    run = launch(world, "--cpu-count", "2", "--name", "signer")
    assert (run["EnclaveName"], run["CPUIDs"], run["MemoryMiB"], run["EnclaveCID"]) == ("signer", [1, 3], 128, 16)
    assert run["EnclaveID"].startswith(f"{INSTANCE_ID}-enc")
    assert world.free_pages() == PAGES_2M - 64  # 128 MiB in 2 MiB pages
    st = world.cli_json("status")
    assert st["cpu_pool"]["free"] == [] and st["cpu_pool"]["held"] == {run["EnclaveID"]: [1, 3]}
    two_m = next(p for p in st["hugepages"] if p["size_kb"] == 2048)
    assert (two_m["total"], two_m["free"], two_m["held_by_enclaves"]) == (PAGES_2M, PAGES_2M - 64, 64)
    # status asks describe-enclaves --metadata: the image reaches status (and the TUI's detail pane)
    (enclave,) = st["enclaves"]
    assert (enclave["ImageName"], enclave["ImageVersion"]) == ("app", "1.0")
    assert enclave["Metadata"]["KernelVersion"] == "4.14.256"
    described = world.cli("describe", "--metadata", "--json")
    assert described.returncode == 0 and described.stderr == ""  # no warning: every enclave answered
    assert [e["EnclaveID"] for e in json.loads(described.stdout)] == [run["EnclaveID"]]
    eif = world.cli_json("describe-eif", "--eif-path", str(world.eif()))
    assert eif["Measurements"]["PCR0"] == enclave["Measurements"]["PCR0"] and eif["ImageName"] == "app"
    # by name
    done = world.cli_json("terminate", "signer")
    assert done["terminated"] == [{"EnclaveName": "signer", "EnclaveID": run["EnclaveID"], "Terminated": True}]
    assert world.free_pages() == PAGES_2M and world.cli_json("status")["cpu_pool"]["free"] == [1, 3]


def test_terminate_all_and_unknown_ids(world: RealWorld) -> None:
    world.set_knobs()
    first = launch(world, "--cpu-ids", "1", "--name", "a")
    second = launch(world, "--cpu-ids", "3", "--name", "b")
    assert (first["CPUIDs"], second["CPUIDs"]) == ([1], [3])
    gone = world.cli_json("terminate", "--all")
    assert sorted(t["EnclaveID"] for t in gone["terminated"]) == sorted([first["EnclaveID"], second["EnclaveID"]])
    assert world.cli_json("terminate", "--all")["terminated"] == []  # nitro-cli prints [] when none run
    # nitrodeck looks the enclave up first: exit 11 like nitro-cli's E11, and nitro-cli is not asked
    missing = world.cli_json("terminate", "i-0fa4e0000000000a1-encdead", expect=11)
    assert missing["error"]["code"] == "ND-NO-ENCLAVE"
    # nitro-cli's own E11 block, parsed (the driver asked directly)
    with pytest.raises(NitroCliError) as caught:
        NitroCli(real_backend()).terminate(enclave_id="i-0fa4e0000000000a1-encdead")
    assert caught.value.code == "E11" and caught.value.exit_status == 11
    assert caught.value.detail is not None and caught.value.detail.startswith("Failed to connect to specific enclave")
    with pytest.raises(NitroCliError) as by_name:
        NitroCli(real_backend()).terminate(name="nobody")
    assert by_name.value.code == "E58" and by_name.value.detail == "No enclave matched the given name."


def drive_launch(world: RealWorld, memory: int = 128, **kw: object) -> NitroCliError:
    """run-enclave through the driver alone: nitrodeck's own pre-launch checks (core/ops/preflight.py)
    would refuse these launches before nitro-cli runs, so nitro-cli's words are read here."""
    with pytest.raises(NitroCliError) as caught:
        NitroCli(real_backend()).run_enclave(LaunchRequest(eif_path=str(world.eif()), memory_mib=memory, **kw))  # type: ignore[arg-type]
    return caught.value


def test_cpu_failures_name_the_cause_from_nitro_clis_own_words(world: RealWorld) -> None:
    launch(world, "--cpu-count", "2")
    # the CLI refuses before nitro-cli runs, naming the conflict, with nitro-cli's code and exit status
    refused = launch(world, "--cpu-count", "2", expect=29)["error"]
    assert refused["code"] == "ND-LAUNCH" and refused["nitro_cli_code"] == "E29"
    # the pool has 2 CPUs and both are held: nitro-cli's check passes, the driver has none left (E29);
    # the cause is only in the error log, and the hint comes from there
    none_left = drive_launch(world, cpu_count=2)
    assert none_left.code == "E29" and none_left.exit_status == 29
    assert none_left.detail == "The enclave cannot be created because no CPUs are available in the pool"
    assert none_left.hint and "every CPU of the enclave pool is held by running enclaves" in none_left.hint
    assert none_left.log_path and error_log_subactions(none_left.log_path)[-1] == none_left.detail
    too_many = drive_launch(world, cpu_count=4)
    assert too_many.code == "E22" and "`cpu-count` is 4" in too_many.message
    assert too_many.detail == "Insufficient CPUs available (requested 4, but maximum is 2)"
    not_in_pool = drive_launch(world, cpu_ids=[2])
    assert not_in_pool.code == "E21" and "contains CPU 2" in not_in_pool.message
    # a CPU another enclave holds: the driver's ioctl refusal, in nitro-cli's words, picks the hint
    held = drive_launch(world, cpu_ids=[3])
    assert held.code == "E29" and held.detail == "The provided vCPU is already used"
    assert held.hint and "held by a running enclave" in held.hint


def test_an_exit_is_recorded_from_nitro_clis_output_alone(world: RealWorld) -> None:
    """On Nitro nothing says an enclave exited: it is just no longer in describe-enclaves. The next
    nitrodeck process to look records `exited` once (how long it ran is an upper bound: `noticed`), with
    what its launch recorded (name, PCR0)."""
    assert world.cli("pin", str(world.eif())).returncode == 0
    run = launch(world, "--cpu-count", "2", "--name", "short")
    world.set_knobs(enclaves=[])  # the enclave went away by itself (its program ended)
    st = world.cli_json("status")
    [gone] = st["exited"]
    assert (gone["enclave_id"], gone["name"], gone["uptime_source"]) == (run["EnclaveID"], "short", "noticed")
    assert gone["uptime_s"] >= 0 and "exit_status" not in gone and "last_console" not in gone  # not debug
    assert gone["pcr0"] == world.cli_json("describe-eif", "--eif-path", str(world.eif()))["Measurements"]["PCR0"]
    events = [json.loads(line) for line in world.cli("events", "--json").stdout.splitlines()]
    assert [e["event"] for e in events] == ["pinned", "launched", "exited"]  # once, though two processes looked


def test_not_enough_hugepages_is_e27_with_the_allocator_hint(world: RealWorld) -> None:
    refused = launch(world, "--cpu-count", "2", memory="1024", expect=27)["error"]
    assert refused["code"] == "ND-LAUNCH" and refused["nitro_cli_code"] == "E27"
    error = drive_launch(world, memory=1024, cpu_count=2)
    assert error.code == "E27" and "`memory` is 1024 MB" in error.message
    assert error.detail == f"Failed to allocate entire memory ({1024 - PAGES_2M * 2} MB remained)"
    assert error.hint and "memory_mib in /etc/nitro_enclaves/allocator.yaml" in error.hint
    assert world.free_pages() == PAGES_2M  # nothing held after a refused launch


def test_partial_describe_shows_what_answered_and_warns(world: RealWorld) -> None:
    a = launch(world, "--cpu-ids", "1", "--name", "a")
    b = launch(world, "--cpu-ids", "3", "--name", "b")
    world.set_knobs(unanswered=[b["EnclaveID"]])
    st = world.cli_json("status")
    assert [e["EnclaveID"] for e in st["enclaves"]] == [a["EnclaveID"]]
    (warning,) = st["warnings"]
    logs = sorted(world.logs.glob("err*.log"))
    assert warning == ("1 enclave process(es) did not answer describe-enclaves (E39: Enclave process connection "
                       f"failure); showing the 1 that did; error log: {logs[-1]}")
    human = world.cli("describe")
    assert human.returncode == 0 and "warning: 1 enclave process(es) did not answer" in human.stderr
    assert a["EnclaveID"] in human.stdout and b["EnclaveID"] not in human.stdout


def test_console_streams_and_e44_keeps_no_log(world: RealWorld, nd_home: Path) -> None:
    quiet = launch(world, "--cpu-ids", "1", "--name", "quiet")
    refused = world.cli_json("console", quiet["EnclaveID"], expect=44)["error"]
    assert refused["code"] == "E44"
    assert refused["detail"].startswith("The enclave was not started with the debug flag set")
    assert "--debug-mode" in refused["hint"]
    assert not (nd_home / "logs" / "console" / f"{quiet['EnclaveID']}.log").exists()  # no empty kept log
    debug = launch(world, "--cpu-ids", "3", "--name", "loud", "--debug-mode")
    done = world.cli("console", "loud", "--disconnect-timeout", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[    0.000000] Linux version 4.14.256 (fake nitro-cli loud)", "[    0.100000] enclave loud booted"
    ]  # nitro-cli's two preamble lines are not console output
    kept = world.cli("console", debug["EnclaveID"], "--log")
    assert kept.stdout == done.stdout


def test_read_only_console_keeps_no_copy(world: RealWorld, nd_home: Path) -> None:
    """nitro-cli keeps no console history, so a console nitrodeck streams is copied under logs/console/;
    read-only (the flag or NITRODECK_READ_ONLY) writes nothing, so it streams the same lines and keeps none."""
    from tests.test_harden_console import changed, tree_of

    debug = launch(world, "--cpu-ids", "3", "--name", "loud", "--debug-mode")

    def home_tree() -> dict:  # parent/ is the stand-in Nitro parent (nitro-cli's own state), not nitrodeck's
        return {k: v for k, v in tree_of(nd_home).items() if k != "parent" and not k.startswith("parent/")}

    before = home_tree()
    for args, env in ((["--read-only"], None), ([], {"NITRODECK_READ_ONLY": "1"})):
        done = world.cli("console", "loud", "--disconnect-timeout", "1", *args, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[    0.100000] enclave loud booted"
        assert changed(before, home_tree()) == [], args
    assert not (nd_home / "logs" / "console" / f"{debug['EnclaveID']}.log").exists()
    kept = world.cli("console", "loud", "--disconnect-timeout", "1")  # one that may write keeps its copy
    assert kept.returncode == 0 and (nd_home / "logs" / "console" / f"{debug['EnclaveID']}.log").is_file()


def test_console_json_into_head_closes_cleanly(world: RealWorld) -> None:
    run = launch(world, "--cpu-ids", "3", "--debug-mode", "--name", "chatty")
    state = world.state()
    for enclave in state["enclaves"]:
        enclave["_chatty"] = True
    world.set_knobs(enclaves=state["enclaves"])
    # `nitrodeck console ID --json | head -n 1`, by the shell
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m console console {run['EnclaveID']} --json | head -n 1"],
        cwd=REPO, env=world.env, capture_output=True, text=True, timeout=60,
    )
    assert json.loads(done.stdout) == {"backend": "real", "line": "[    0.000000] Linux version 4.14.256 (fake nitro-cli chatty)"}
    assert done.returncode == 141  # nitrodeck's status: ended by the closed pipe, like `cat | head`
    assert done.stderr == ""  # no traceback, no asyncio noise
    # the console reader is gone (nothing keeps reading for nobody)
    out = subprocess.run(["pgrep", "-f", f"console --enclave-id {run['EnclaveID']}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(("args", "reported"), [
    (("status", "--json"), 0),  # a report
    (("terminate", "i-0fa4e0000000000a1-enc0000000000000001", "--json"), 11),  # an error's report (E11)
    (("describe-eif", "--eif-path", "/nonexistent.eif", "--json"), 35),  # another error, from nitro-cli's E35
])
def test_json_into_a_closed_pipe_exits_quietly(world: RealWorld, args: tuple[str, ...], reported: int) -> None:
    """Every --json report, success or error, meets a reader that already left: exit 141, no traceback.
    (The pipe's read end is closed before nitrodeck starts, so every write fails: no race with a reader.)"""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "console", *args], cwd=REPO, env=world.env, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    # the same command into an open pipe: the report (or the error) that met the closed one
    assert world.cli(*args).returncode == reported


def drive_build(world: RealWorld, **kw: object) -> NitroCliError:
    """build-enclave through the driver alone (the CLI checks the daemon first, before nitro-cli runs)."""
    with pytest.raises(NitroCliError) as caught:
        NitroCli(real_backend()).build_enclave(
            BuildRequest(output_file=str(world.root / "eifs" / "x.eif"), docker_uri="app:1", **kw)  # type: ignore[arg-type]
        )
    return caught.value


def test_build_without_a_docker_daemon_shows_nitro_clis_docker_error(
    world: RealWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = {"DOCKER_HOST": f"unix://{world.root}/no-docker.sock"}
    out = str(world.root / "eifs" / "x.eif")
    # the CLI asks the daemon first and says what is missing, with nitro-cli's exit status
    refused = world.cli_json("build", "--docker-uri", "app:1", "--output-file", out, expect=50, env=nowhere)["error"]
    assert refused["code"] == "ND-DOCKER" and "the Docker daemon does not answer" in refused["message"]
    # nitro-cli's own words, when it is asked anyway, keep its Docker error line and pick a Docker hint
    monkeypatch.setenv("DOCKER_HOST", nowhere["DOCKER_HOST"])
    pulled = drive_build(world)
    assert pulled.code == "E50" and pulled.message.endswith("\nDocker error: PullError")
    assert pulled.hint and "Docker daemon runs" in pulled.hint and "blobs" not in pulled.hint
    built = drive_build(world, docker_dir=str(world.root))
    assert built.code == "E49" and built.message.endswith("\nDocker error: BuildError")
    monkeypatch.setenv("DOCKER_HOST", "bogus-address")
    bad = drive_build(world)
    assert bad.code == "E48" and bad.message.endswith("\nDocker error: ConnectionError")
    assert bad.hint and "could not connect to the Docker daemon" in bad.hint and "NITRO_CLI_BLOBS" not in bad.hint
    human = world.cli("build", "--docker-uri", "app:1", "--output-file", out, env=nowhere)
    assert human.returncode == 50 and "the Docker daemon does not answer" in human.stderr


def test_build_payload_on_the_real_backend_says_what_is_missing(world: RealWorld) -> None:
    nowhere = {"DOCKER_HOST": f"unix://{world.root}/no-docker.sock"}
    error = world.cli_json("build", "--payload", expect=1, env=nowhere)["error"]
    assert error["code"] == "ND-DOCKER" and error["where"] == "build --payload"
    assert f"no Docker daemon answered at unix://{world.root}/no-docker.sock" in error["message"]
    assert "--rootfs" not in json.dumps(error)  # no flags the operator never typed


@pytest.mark.docker
def test_build_payload_on_the_real_backend_through_docker(world: RealWorld, docker_client: object) -> None:
    result = world.cli_json("build", "--payload", "--output-file", str(world.root / "eifs" / "payload.eif"))
    assert result["backend"] == "real" and len(result["Measurements"]["PCR0"]) == 96
    info = world.cli_json("describe-eif", "--eif-path", str(world.root / "eifs" / "payload.eif"))
    # the tag nitrodeck gave the payload's image (the daemon may hold the same image under other tags)
    assert "nitrodeck-payload:latest" in info["Metadata"]["DockerInfo"]["RepoTags"]


def test_missing_device_refuses_only_what_needs_it(world: RealWorld) -> None:
    world.device.unlink()
    st = world.cli_json("status")
    reason = st["read_only_reason"]
    assert st["read_only"] is True and reason["kind"] == "device-missing"
    assert reason["detail"] == (
        f"read-only: {world.device} does not exist, so enclaves cannot be launched or terminated here "
        "(from $NITRODECK_DEVICE)"
    )
    human = world.cli("status")
    assert f"{world.device} does not exist" in human.stdout and "launch and terminate" in human.stdout
    refused = launch(world, "--cpu-count", "2", expect=13)["error"]
    assert refused["code"] == "ND-READ-ONLY" and "does not exist" in refused["message"]
    assert "--read-only" not in refused["hint"] and "NITRODECK_DEVICE" in refused["hint"]
    # build needs no device: it runs (and here fails on Docker, which proves nitro-cli was asked)
    nowhere = {"DOCKER_HOST": f"unix://{world.root}/no-docker.sock"}
    built = world.cli_json("build", "--docker-uri", "a:1", "--output-file", str(world.root / "b.eif"), expect=50,
                           env=nowhere)
    assert built["error"]["code"] == "ND-DOCKER"  # refused for want of Docker, not for read-only


def test_flag_and_environment_refuse_everything_and_say_so(world: RealWorld) -> None:
    out = str(world.root / "b.eif")
    flagged = world.cli_json("--read-only", "build", "--docker-uri", "a:1", "--output-file", out, expect=13)["error"]
    assert flagged["message"] == "build is refused: read-only: the --read-only flag was given"
    assert flagged["hint"] == "restart without --read-only"
    env = world.cli_json("build", "--docker-uri", "a:1", "--output-file", out, expect=13,
                         env={"NITRODECK_READ_ONLY": "1"})["error"]
    assert env["message"] == "build is refused: read-only: NITRODECK_READ_ONLY=1 is set"
    assert env["hint"] == "unset NITRODECK_READ_ONLY to allow changes"
    st = world.cli_json("status", env={"NITRODECK_READ_ONLY": "yes"})
    assert st["read_only_reason"]["kind"] == "environment"


def test_device_not_writable_is_its_own_reason(world: RealWorld) -> None:
    require(is_root() and shutil.which("setpriv") is not None, "needs root and setpriv to run as another user")
    world.device.chmod(0o600)  # root's; the test runs nitrodeck as nobody
    os.chmod(world.root.parent, 0o755)
    for path in (world.root, *world.root.rglob("*")):
        if path != world.device:
            path.chmod(0o777 if path.is_dir() else 0o666)
    env = {**world.env, "HOME": str(world.root)}
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "console", "status",
         "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reason = json.loads(done.stdout)["read_only_reason"]
    assert reason["kind"] == "device-not-writable" and "is not writable by this user" in reason["detail"]
    assert "usermod -aG ne" in reason["hint"]


def test_no_driver_is_said_in_status_and_at_launch(world: RealWorld) -> None:
    shutil.rmtree(world.sysfs / "module")
    st = world.cli_json("status")
    assert st["driver_loaded"] is False and st["cpu_pool"]["pool"] == []
    assert st["allocator_error"].startswith(
        f"the Nitro Enclaves driver is not loaded: {world.sysfs}/module/nitro_enclaves/parameters/ne_cpus does not exist"
    )
    assert "driver" in world.cli("status").stdout
    error = launch(world, "--cpu-count", "2", expect=19)["error"]
    assert error["code"] == "E19"
    assert "File: '/sys/module/nitro_enclaves/parameters/ne_cpus', failing operation: 'Open'." in error["message"]
    assert "the Nitro Enclaves driver is not loaded" in error["hint"]


def test_version_and_pcr_through_the_real_backend(world: RealWorld, tmp_path: Path) -> None:
    import hashlib

    driver = NitroCli(real_backend())
    assert driver.version() == "Nitro CLI 1.5.0"
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"measure me\n")
    assert driver.pcr(input=blob) == hashlib.sha384(b"\0" * 48 + hashlib.sha384(b"measure me\n").digest()).hexdigest()


def test_events_follow_runs_describe_only_when_the_sockets_folder_changes(world: RealWorld, tmp_path: Path) -> None:
    """`events --follow` notices exits itself, but like the dashboard it learns *when* from the kernel
    (inotify on nitro-cli's sockets folder, core/ops/watch.py): no describe-enclaves while nothing
    changes, one soon after an enclave's socket goes (issue 13 item 1)."""
    enclave_id = launch(world, "--cpu-count", "2")["EnclaveID"]
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    (sockets / f"{enclave_id}.sock").write_text("")  # nitro-cli keeps one per running enclave
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "bin" / "nitro-cli"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {FAKE_DIR}/nitro-cli "$@"\n')
    wrapper.chmod(0o755)
    env = {**world.env, "NITRO_CLI_SOCKETS_PATH": str(sockets), "PATH": f"{wrapper.parent}{os.pathsep}{world.env['PATH']}"}
    follower = subprocess.Popen([sys.executable, "-m", "console", "events", "--follow", "--json"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def describes() -> int:
            return calls.read_text().split().count("describe-enclaves") if calls.exists() else 0

        wait_for(lambda: describes() >= 1, timeout=30)  # the first listing
        time.sleep(4)  # idle: the journal is followed, nitro-cli is not asked again
        idle = describes()
        time.sleep(3)
        assert describes() == idle <= 2, calls.read_text()
        # the enclave ends behind nitrodeck's back: nitro-cli's state and its socket both go
        done = subprocess.run([str(FAKE_DIR / "nitro-cli"), "terminate-enclave", "--enclave-id", enclave_id],
                              env=world.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        (sockets / f"{enclave_id}.sock").unlink()
        assert follower.stdout is not None
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            if not select.select([follower.stdout], [], [], 1)[0]:
                continue
            line = follower.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if seen[-1]["event"] == "exited":
                break
        assert seen and seen[-1]["event"] == "exited" and seen[-1]["enclave_id"] == enclave_id, seen
        assert describes() > idle
    finally:
        follower.terminate()
        assert follower.wait(30) == 0
