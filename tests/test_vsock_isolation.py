"""Issue 9 item 6 end to end: real enclaves under nitro-emu cannot pose as another CID, cannot take
another CID's ports, and leave no socket files behind when they end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.channel.vsock import PARENT_CID, Transport
from tests.conftest import REPO, wait_for
from tests.test_emulator_run import configure, emu

pytestmark = pytest.mark.slow

LISTENER = """
import sys
from core.channel.vsock import from_env
t = from_env()
listener = t.listen(5005)
print("LISTENING", flush=True)
while True:
    try:
        conn, peer = t.accept(listener)
    except OSError:
        continue
    conn.sendall(f"peer={peer}".encode())
    conn.close()
"""

ATTACKER = """
import errno, os, socket, struct, time
from core.channel.unixsock import short_path
from core.channel.vsock import Transport, from_env
real = from_env()
liar = Transport(own_cid=3, emulated_dir=real.emulated_dir)
target = int(open("/app/target").read()) if os.path.exists("/app/target") else 20
def say(*a):
    print(*a, flush=True)
try:
    with liar.connect(target, 5005) as s:
        say("LIBRARY-CONNECT", s.recv(100).decode())
except OSError as exc:
    say("LIBRARY-REFUSED", type(exc).__name__)
raw = socket.socket(socket.AF_UNIX)
try:
    raw.connect(short_path(real.socket_path(target, 5005)))
    raw.sendall(struct.pack(">I", 3))
    say("RAW-VERDICT", raw.recv(1).hex() or "closed")
except OSError as exc:
    say("RAW-REFUSED", type(exc).__name__)
try:
    liar.listen(8000)
    say("LISTEN-AS-PARENT-OK")
except OSError as exc:
    say("LISTEN-AS-PARENT-REFUSED", errno.errorcode.get(exc.errno, exc.errno))
say("DONE")
time.sleep(300)
"""


def build_py(home: Path, name: str, source: str, target: int | None = None) -> Path:
    rootfs = home / f"rootfs-{name}"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "main.py").write_text(source)
    if target is not None:
        (rootfs / "app" / "target").write_text(str(target))
    out = home / f"{name}.eif"
    res = emu(
        "build-enclave", "--rootfs", str(rootfs), "--cmd", "python3 /app/main.py", "--env", f"PYTHONPATH={REPO}",
        "--output-file", str(out), "--name", name,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def launch(eif: Path, cid: int) -> dict[str, object]:
    # debug mode: only a debug-mode enclave has a console, and the scripts report through it
    res = emu(
        "run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--enclave-cid", str(cid),
        "--debug-mode",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def console(home: Path, enclave_id: str) -> str:
    path = home / "emulator" / "console" / f"{enclave_id}.log"
    return path.read_text() if path.exists() else ""


def test_an_enclave_cannot_claim_another_cid(nd_home: Path) -> None:
    configure(nd_home, cpu_count=4)
    victim = launch(build_py(nd_home, "victim", LISTENER), 20)
    wait_for(lambda: "LISTENING" in console(nd_home, str(victim["EnclaveID"])), timeout=30)
    # the parent reaches the victim, and the victim sees CID 3
    parent = Transport(own_cid=PARENT_CID, emulated_dir=nd_home / "emulator" / "vsock")
    with parent.connect(20, 5005) as s:
        assert s.recv(100) == b"peer=3"
    attacker = launch(build_py(nd_home, "attacker", ATTACKER, target=20), 21)
    out = wait_for(lambda: (text := console(nd_home, str(attacker["EnclaveID"]))) and "DONE" in text and text, 30)
    assert "LIBRARY-REFUSED ConnectionRefusedError" in out, out
    assert "RAW-VERDICT 01" in out or "RAW-VERDICT closed" in out, out
    assert "LISTEN-AS-PARENT-REFUSED EADDRNOTAVAIL" in out, out
    assert "LIBRARY-CONNECT" not in out and "peer=3" not in out
    # a host process cannot take the victim's CID either
    impostor = Transport(own_cid=20, emulated_dir=nd_home / "emulator" / "vsock")
    with pytest.raises(OSError):
        impostor.listen(6000)


def test_socket_files_go_with_the_enclave(nd_home: Path) -> None:
    configure(nd_home)
    info = launch(build_py(nd_home, "victim", LISTENER), 22)
    folder = nd_home / "emulator" / "vsock" / "22"
    wait_for(lambda: (folder / "5005.sock").exists(), timeout=30)
    res = emu("terminate-enclave", "--enclave-id", str(info["EnclaveID"]))
    assert res.returncode == 0, res.stderr
    assert not folder.exists()


def test_socket_files_go_when_the_supervisor_was_killed(nd_home: Path) -> None:
    import os
    import signal

    configure(nd_home)
    info = launch(build_py(nd_home, "victim", LISTENER), 23)
    folder = nd_home / "emulator" / "vsock" / "23"
    wait_for(lambda: (folder / "5005.sock").exists(), timeout=30)
    os.kill(int(str(info["ProcessID"])), signal.SIGKILL)
    wait_for(lambda: not _alive(int(str(info["ProcessID"]))), 10)
    res = emu("describe-enclaves")  # reclaims the dead supervisor's enclave
    assert res.returncode == 0 and json.loads(res.stdout) == []
    assert not folder.exists()


def _alive(pid: int) -> bool:
    from emulator.state import proc_start_time

    return proc_start_time(pid) != 0


NSM_PROBE = """
import glob, os, socket, struct, time, cbor2
own = os.environ.get("NITRODECK_NSM_SOCKET", "")
home = os.environ["NITRODECK_HOME"]
def ask(path):
    here = os.getcwd()
    folder, name = os.path.split(path)
    os.chdir(folder)  # the absolute path may be longer than sun_path
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(name)
            body = cbor2.dumps({"DescribePCR": {"index": 0}})
            s.sendall(struct.pack(">I", len(body)) + body)
            head = s.recv(4)
            return "ANSWERED" if len(head) == 4 else "CLOSED"
    except OSError as exc:
        return "REFUSED " + type(exc).__name__
    finally:
        os.chdir(here)
print("OWN", ask(own), flush=True)
for path in sorted(glob.glob(os.path.join(home, "emulator", "run", "*", "nsm.sock"))):
    if os.path.realpath(path) != os.path.realpath(own):
        print("OTHER", ask(path), flush=True)
print("DONE", flush=True)
time.sleep(300)
"""


def test_an_enclave_cannot_use_another_enclaves_nsm(nd_home: Path) -> None:
    """The same class as a false CID: another enclave's NSM would attest that enclave's PCRs with the
    asker's key, and KMS would release that enclave's keys to it."""
    configure(nd_home, cpu_count=4)
    launch(build_py(nd_home, "victim", LISTENER), 24)
    prober = launch(build_py(nd_home, "prober", NSM_PROBE), 25)
    out = wait_for(lambda: (text := console(nd_home, str(prober["EnclaveID"]))) and "DONE" in text and text, 30)
    assert "OWN ANSWERED" in out, out
    others = [line for line in out.splitlines() if line.startswith("OTHER")]
    assert others and all("ANSWERED" not in line for line in others), out


CONTROL_PROBE = """
import glob, json, os, socket, struct, time
home = os.environ["NITRODECK_HOME"]
for path in sorted(glob.glob(os.path.join(home, "emulator", "run", "*", "control.sock"))):
    here = os.getcwd()
    folder, name = os.path.split(path)
    os.chdir(folder)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(name)
            body = json.dumps({"cmd": "terminate"}).encode()
            s.sendall(struct.pack(">I", len(body)) + body)
            print("CONTROL", "ANSWERED" if len(s.recv(4)) == 4 else "CLOSED", flush=True)
    except OSError as exc:
        print("CONTROL REFUSED", type(exc).__name__, flush=True)
    finally:
        os.chdir(here)
print("DONE", flush=True)
time.sleep(300)
"""


def test_an_enclave_cannot_terminate_another(nd_home: Path) -> None:
    """Every enclave runs as the emulator's user, so the supervisors' control sockets were open to them."""
    configure(nd_home, cpu_count=4)
    victim = launch(build_py(nd_home, "victim", LISTENER), 26)
    prober = launch(build_py(nd_home, "prober", CONTROL_PROBE), 27)
    out = wait_for(lambda: (text := console(nd_home, str(prober["EnclaveID"]))) and "DONE" in text and text, 30)
    assert "CONTROL ANSWERED" not in out and "CONTROL" in out, out
    described = json.loads(emu("describe-enclaves").stdout)
    assert sorted((e["EnclaveID"], e["State"]) for e in described) == sorted(
        [(victim["EnclaveID"], "RUNNING"), (prober["EnclaveID"], "RUNNING")]
    )
