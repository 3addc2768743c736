"""Lifecycle: validation, lookups, read-only refusal (nothing runs, nothing is audited), audit lines.

The nitro-cli side is the fake executable from test_driver.py (a process-boundary stand-in: it logs
every argv it receives, which is how "nothing ran" is proven). The emulator path is in
test_e2e_emulator.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import ReadOnlyError, UsageError
from core.models import BuildRequest, LaunchRequest, Measurements
from core.ops.lifecycle import MUTATING_ACTIONS, AmbiguousEnclave, EnclaveNotFound, Lifecycle, mutating
from tests.conftest import REPO, require
from tests.test_driver import DESCRIBE, DESCRIBE_EIF, ENCLAVE_ID, RUN_STDOUT, TERMINATE, Fake

TWO = json.dumps([
    {**json.loads(DESCRIBE)[0]},
    {**json.loads(DESCRIBE)[0], "EnclaveID": "i-078485c44ae5a4c2e-enc199b46fe989c999", "EnclaveName": "nginx_1"},
])


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nd_home: Path) -> Fake:
    f = Fake(tmp_path)
    monkeypatch.setenv("FAKE_NITRO_SCENARIO", str(f.scenario))
    return f


def lifecycle(fake: Fake, steps: dict, read_only: bool = False) -> Lifecycle:
    return Lifecycle(driver=fake.driver(steps, name="emulator"), read_only=read_only)


def audit_lines(home: Path) -> list[dict]:
    path = home / "audit.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_read_only_refuses_every_mutation(fake: Fake, nd_home: Path, tmp_path: Path) -> None:
    eif = tmp_path / "a.eif"
    eif.write_bytes(b"x")
    lc = lifecycle(fake, {"run-enclave": {"stdout": RUN_STDOUT}, "describe-enclaves": {"stdout": DESCRIBE},
                          "terminate-enclave": {"stdout": TERMINATE}}, read_only=True)
    calls = [
        lambda: lc.build(BuildRequest(str(tmp_path / "o.eif"), rootfs=str(tmp_path))),
        lambda: lc.launch(LaunchRequest(str(eif), 512, cpu_count=2)),
        lambda: lc.terminate(ENCLAVE_ID),
        lambda: lc.terminate_all(),
        lambda: lc.pin("web", Measurements("a" * 96, "b" * 96, "c" * 96)),
    ]
    for call in calls:
        with pytest.raises(ReadOnlyError) as info:
            call()
        assert info.value.exit_status == 13
    assert fake.calls() == [] and fake.records == []
    assert audit_lines(nd_home) == []
    assert not (nd_home / "expected").exists() and not (tmp_path / "o.eif").exists()
    assert {"build", "launch", "terminate", "terminate-all", "pin"} <= MUTATING_ACTIONS
    # reads still work
    assert [e.enclave_id for e in lc.describe()] == [ENCLAVE_ID]


def test_launch_audited_with_the_command(fake: Fake, nd_home: Path, tmp_path: Path) -> None:
    eif = tmp_path / "a.eif"
    eif.write_bytes(b"x")
    seen = []
    steps = {"run-enclave": {"stdout": RUN_STDOUT}, "describe-eif": {"stdout": DESCRIBE_EIF},
             "describe-enclaves": {"stdout": "[]"}}
    lc = Lifecycle(driver=fake.driver(steps, name="emulator"), on_command=seen.append)
    info = lc.launch(LaunchRequest(str(eif), 512, cpu_count=2, debug_mode=True))
    assert info.cid == 10
    [line] = audit_lines(nd_home)
    assert line["action"] == "launch" and line["result"] == "ok" and line["backend"] == "emulator"
    assert line["argv"][:2] == ["nitro-emu", "run-enclave"] and "--debug-mode" in line["argv"]
    assert line["user"] and line["time"].endswith("Z")
    # TUI listener: the pre-launch reads (describe-eif, describe-enclaves), then the launch
    assert [r.command.split()[1] for r in seen] == ["describe-eif", "describe-enclaves", "run-enclave"]
    assert fake.records and fake.records[0].ok  # the driver's own listener still called


def test_failed_mutation_audited_with_code(fake: Fake, nd_home: Path) -> None:
    lc = lifecycle(fake, {"describe-enclaves": {"stdout": DESCRIBE},
                          "terminate-enclave": {"stderr": "[ E11 ] Socket error.\n", "exit": 11}})
    with pytest.raises(Exception) as info:
        lc.terminate("nginx")
    assert getattr(info.value, "code", None) == "E11"
    [line] = audit_lines(nd_home)
    assert line["result"] == "error" and line["code"] == "E11"
    assert line["argv"] == ["nitro-emu", "terminate-enclave", "--enclave-id", ENCLAVE_ID]


def test_validation_before_running(fake: Fake, tmp_path: Path) -> None:
    eif = tmp_path / "a.eif"
    eif.write_bytes(b"x")
    lc = lifecycle(fake, {"run-enclave": {"stdout": RUN_STDOUT}})
    bad = [
        LaunchRequest(str(eif), 32, cpu_count=2),
        LaunchRequest(str(eif), 512),
        LaunchRequest(str(eif), 512, cpu_count=2, cpu_ids=[1, 3]),
        LaunchRequest(str(eif), 512, cpu_count=0),
        LaunchRequest(str(eif), 512, cpu_count=2, cid=3),
        LaunchRequest(str(tmp_path / "missing.eif"), 512, cpu_count=2),
    ]
    for req in bad:
        with pytest.raises(UsageError):
            lc.launch(req)
    assert fake.calls() == []


def test_find(fake: Fake) -> None:
    lc = lifecycle(fake, {"describe-enclaves": {"stdout": TWO}})
    assert lc.find(ENCLAVE_ID).name == "nginx"
    assert lc.find("nginx_1").enclave_id.endswith("999")
    assert lc.find("enc199b46fe989c999").name == "nginx_1"
    with pytest.raises(AmbiguousEnclave):
        lc.find("199b46fe989c")
    with pytest.raises(EnclaveNotFound) as info:
        lc.find("web")
    assert info.value.exit_status == 11
    with pytest.raises(UsageError):
        lc.find("   ")


def test_mutating_decorator_for_other_modules(nd_home: Path) -> None:
    ran = []

    class Sealer:
        read_only = True

        @mutating("kms-seal-test")
        def seal(self, secret: bytes) -> int:
            ran.append(1)
            return len(secret)

    @mutating("sign-test")
    def sign(data: bytes, *, read_only: bool = False) -> bytes:
        ran.append(2)
        return data[::-1]

    assert "kms-seal-test" in MUTATING_ACTIONS and "sign-test" in MUTATING_ACTIONS
    with pytest.raises(ReadOnlyError):
        Sealer().seal(b"top secret")
    with pytest.raises(ReadOnlyError):
        sign(b"ab", read_only=True)
    assert ran == [] and audit_lines(nd_home) == []
    assert sign(b"ab") == b"ba"
    [line] = audit_lines(nd_home)
    assert line["action"] == "sign-test" and line["result"] == "ok"
    assert "top secret" not in (nd_home / "audit.log").read_text()


def test_console_log_and_instance(fake: Fake, nd_home: Path) -> None:
    lc = lifecycle(fake, {})
    console_dir = nd_home / "emulator" / "console"
    console_dir.mkdir(parents=True)
    (console_dir / f"{ENCLAVE_ID}.log").write_text("boot\n")
    assert lc.console_log(ENCLAVE_ID) == console_dir / f"{ENCLAVE_ID}.log"
    assert lc.console_log("i-none-enc1") is None
    with pytest.raises(UsageError):
        lc.console_log("../../etc/passwd")
    (nd_home / "emulator" / "instance.yaml").write_text("instance_id: i-0123456789abcdef0\n")
    assert lc.instance_id() == "i-0123456789abcdef0"


def test_auto_read_only(tmp_path: Path) -> None:
    from core.backends.real import real_backend
    from emulator.backend import emulator_backend

    device = tmp_path / "nitro_enclaves"
    device.write_text("")
    assert not Lifecycle.auto_read_only(emulator_backend(), device)
    assert not Lifecycle.auto_read_only(real_backend(), device)
    assert Lifecycle.auto_read_only(real_backend(), tmp_path / "missing")


def test_auto_read_only_for_a_device_this_user_cannot_write(scratch_dirs: Callable[..., Path]) -> None:
    """Root may write any file, so the check runs as a user (nobody) that can reach the device but, by its
    mode, not write it; and then can, once the mode allows it."""
    check = "import sys; from core.backends.real import real_backend; from core.ops.lifecycle import Lifecycle; " \
            "print(Lifecycle.auto_read_only(real_backend(), __import__('pathlib').Path(sys.argv[1])))"
    argv = [sys.executable, "-c", check]
    if os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv is needed to check the device as another user")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    folder = scratch_dirs("nd-dev-")  # in /tmp and open to all: nobody must reach the device, not be stopped short
    folder.chmod(0o755)
    device = folder / "nitro_enclaves"
    device.write_text("")
    answers = []
    for mode in (0o444, 0o666):
        device.chmod(mode)
        done = subprocess.run([*argv, str(device)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answers.append(done.stdout.strip())
    assert answers == ["True", "False"]  # read-only while it cannot write the device, not once it can


async def test_real_backend_console_copy_is_kept(fake: Fake, nd_home: Path) -> None:
    """Real nitro-cli keeps no console history: what nitrodeck streams is kept under logs/console."""
    lc = Lifecycle(driver=fake.driver({
        "describe-enclaves": {"stdout": DESCRIBE},
        "console": {"lines": ["Connecting to the console for enclave 16...",
                              "Successfully connected to the console.", "boot ok", "app says hi"]},
    }, name="real"))
    lines = [line async for line in lc.console("nginx")]
    assert lines == ["boot ok", "app says hi"]
    kept = lc.console_log(ENCLAVE_ID)
    assert kept == nd_home / "logs" / "console" / f"{ENCLAVE_ID}.log"
    assert kept.read_text() == "boot ok\napp says hi\n"


def test_read_only_against_the_emulator(nd_home: Path, tmp_path: Path) -> None:
    """The real emulator: refused actions leave no audit line, no EIF, no enclave and no slot."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "run.sh").write_text("#!/bin/sh\nsleep 30\n")
    eif = tmp_path / "ro.eif"
    writer = Lifecycle()
    writer.build(BuildRequest(str(eif), rootfs=str(rootfs), cmd="/bin/sh /run.sh"))
    (nd_home / "audit.log").unlink()

    lc = Lifecycle(read_only=True)
    with pytest.raises(ReadOnlyError):
        lc.build(BuildRequest(str(tmp_path / "other.eif"), rootfs=str(rootfs), cmd="/bin/sh /run.sh"))
    with pytest.raises(ReadOnlyError):
        lc.launch(LaunchRequest(str(eif), 64, cpu_count=2))
    with pytest.raises(ReadOnlyError):
        lc.terminate_all()
    assert not (tmp_path / "other.eif").exists() and not (nd_home / "audit.log").exists()
    assert lc.describe() == []
    run_dir = nd_home / "emulator" / "run"
    slots = [p for p in run_dir.iterdir() if p.is_dir()] if run_dir.exists() else []
    assert slots == []
