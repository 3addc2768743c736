"""`nitrodeck doctor`: each precondition broken on purpose is reported as that check failing, with its fix.

The emulator's world is real (instance.yaml, allocator.yaml, its pools); the Docker daemon is the
private dockerd; the clock's reference is a loopback HTTP server whose Date header is 30 minutes
off; the full disk is a tmpfs mounted under the test's own folder. A Nitro parent is a fake sysfs
tree handed to the same checks.
"""

from __future__ import annotations

import email.utils
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import NitrodeckError
from core.ops.doctor import (
    MAX_CONFIG_BYTES,
    DoctorError,
    Identity,
    TimeReference,
    _http_date,
    host_inputs,
    parse_allocator_request,
    run_doctor,
)
from emulator.backend import emulator_backend
from tests.conftest import is_root, require

REPO = Path(__file__).resolve().parent.parent


def doctor(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    full = {k: v for k, v in os.environ.items() if k not in ("NITRODECK_METADATA_URL", "ECS_CONTAINER_METADATA_URI_V4")}
    full.update({"NITRODECK_HOME": str(home), "NITRODECK_BACKEND": "emulator"})
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "console", "doctor", "--json", *args],
        capture_output=True, text=True, env=full, cwd=REPO, timeout=120,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def failing(report: dict) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] == "fail"}


@pytest.fixture
def world(nd_home: Path) -> Path:
    """A healthy emulator world: its model written, an allowlist, the private dockerd."""
    require(bool(os.environ.get("DOCKER_HOST")), "the doctor's Docker check needs the private dockerd (make test)")
    etc = nd_home / "emulator" / "etc"
    etc.mkdir(parents=True)
    (etc / "allocator.yaml").write_text("---\nmemory_mib: 512\ncpu_count: 2\n")
    (etc / "vsock-proxy.yaml").write_text("allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n")
    (nd_home / "emulator" / "instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nmemory_mib: 4096\n"
    )
    return nd_home


class DateServer:
    """A loopback endpoint answering every GET with 200 and a Date header ``offset`` away from now."""

    def __init__(self, offset: timedelta) -> None:
        outer = self
        self.offset = offset
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                body = b"c6i.xlarge"
                self.send_response_only(200)
                self.send_header("Date", email.utils.format_datetime(datetime.now(UTC) + outer.offset, usegmt=True))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:  # noqa: N802
                self.send_response(405)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/latest/meta-data/instance-type"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> DateServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_healthy_emulator_passes_and_exits_0(world: Path) -> None:
    with DateServer(timedelta(0)) as meta:
        rc, report = doctor(world, "--metadata-url", meta.url)
    checks = by_id(report)
    assert rc == 0 and report["ok"] is True, report
    assert failing(report) == set()
    assert checks["hugepages"]["found"].startswith("requested 512 MiB, present 512 MiB")
    assert checks["metadata"]["status"] == "ok" and meta.hits >= 1
    assert checks["clock"]["status"] == "ok"
    assert "Date header" in checks["clock"]["found"]
    assert "API" in checks["docker"]["found"]
    assert all(c["fix"] is None for c in report["checks"] if c["status"] == "ok")
    # the order and ids docs/cli-json.md documents
    assert [c["id"] for c in report["checks"]] == [
        "instance", "device", "access", "driver", "nitro-cli", "allocator", "allocator-config", "hugepages",
        "cpu-pool", "parent-memory", "vsock-proxy", "docker", "metadata", "clock", "disk",
    ]
    assert report["counts"] == {"ok": 15, "warn": 0, "fail": 0}


def test_allocator_asking_more_than_the_machine_has(world: Path) -> None:
    (world / "emulator/etc/allocator.yaml").write_text("---\nmemory_mib: 8192\ncpu_count: 8\n")
    rc, report = doctor(world)
    checks = by_id(report)
    assert rc == 1
    assert {"allocator", "allocator-config", "hugepages", "parent-memory"} <= failing(report)
    config = checks["allocator-config"]
    assert "memory_mib 8192 leaves less than 512 MiB of the machine's 4096 MiB" in config["found"]
    assert "8 CPUs asked, at most 6 of 8" in config["found"]
    assert "allocator.yaml" in config["fix"]
    assert "Failed to find suitable CPUs" in checks["allocator"]["found"]  # nitro-enclaves-allocator's words


TWO_NODES = "instance_id: i-0123456789abcdef0\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nmemory_mib: 8192\nnuma_nodes: 2\n"


@pytest.mark.parametrize(("allocator", "instance", "problem"), [
    # within the machine's totals, and still more than it can give: the allocator or the driver refuses each
    ("cpu_pool: 0,4", None, "cpu_pool takes 0,4 of CPU 0's core (0,4), which stays with the parent"),
    ("cpu_pool: 8,12", None, "cpu_pool names CPU(s) 8,12 the machine does not have (0-7)"),
    ("cpu_pool: 1,2", None, "cpu_pool splits cores: add their sibling(s) 5,6 (whole cores only)"),
    ("cpu_count: 6", TWO_NODES, "cpu_count 6 fits no NUMA node (at most 4 CPUs on one node besides CPU 0's core)"),
    ("cpu_count: 2", TWO_NODES.replace("memory_mib: 8192", "memory_mib: 12288"),
     "is more than the CPU pool's NUMA node holds (6144 MiB)"),
])
def test_allocator_asking_what_the_machine_cannot_give(world: Path, allocator: str, instance: str | None,
                                                       problem: str) -> None:
    memory = "memory_mib: 7000" if "12288" in (instance or "") else "memory_mib: 512"
    (world / "emulator/etc/allocator.yaml").write_text(f"---\n{memory}\n{allocator}\n")
    if instance:
        (world / "emulator/instance.yaml").write_text(instance)
    rc, report = doctor(world)
    checks = by_id(report)
    assert rc == 1 and {"allocator", "allocator-config"} <= failing(report), report
    assert problem in checks["allocator-config"]["found"]
    assert checks["allocator-config"]["fix"].startswith(f"edit {world}/emulator/etc/allocator.yaml")


def test_allocator_config_changed_since_the_allocator_ran(world: Path) -> None:
    (world / "emulator/etc/allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 4\n")
    doctor(world)  # the emulated allocator starts on this file
    (world / "emulator/etc/allocator.yaml").write_text("---\nmemory_mib: 512\ncpu_count: 2\n")
    rc, report = doctor(world)
    checks = by_id(report)
    # what the kernel holds is more than the file asks: a warning (the next restart shrinks it), not a failure
    assert rc == 0 and checks["hugepages"]["status"] == checks["cpu-pool"]["status"] == "warn", report
    assert "512 MiB more than allocator.yaml asks" in checks["hugepages"]["found"]
    assert checks["cpu-pool"]["found"].startswith("requested 2, pool [1,5,2,6]")
    assert "nitro-emu restart-allocator" in checks["cpu-pool"]["fix"]


def test_allocator_file_the_allocator_would_refuse(world: Path) -> None:
    # valid YAML without the `---` line the allocator's parser starts at
    (world / "emulator/etc/allocator.yaml").write_text("memory_mib: 512\ncpu_count: 2\n")
    rc, report = doctor(world)
    config = by_id(report)["allocator-config"]
    assert rc == 1 and config["status"] == "fail"
    assert "Config error: missing memory reservation (`memory_mib`)." in config["found"]


def test_graviton_sized_instance_without_smt_passes(world: Path) -> None:
    # 2 vCPUs, one thread per core (Graviton): CPU 0 stays, CPU 1 is a whole core for the enclave
    (world / "emulator/instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 2\ncores: 2\nthreads_per_core: 1\nmemory_mib: 4096\n"
    )
    (world / "emulator/etc/allocator.yaml").write_text("---\nmemory_mib: 512\ncpu_count: 1\n")
    rc, report = doctor(world)
    assert rc == 0 and failing(report) == set(), report
    (world / "emulator/instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 2\ncores: 1\nthreads_per_core: 2\nmemory_mib: 4096\n"
    )
    rc, report = doctor(world)
    assert "instance" in failing(report) and "no full core is left" in by_id(report)["instance"]["found"]


def test_unusable_emulator_model(world: Path) -> None:
    (world / "emulator/instance.yaml").write_text("instance_id: i-0123456789abcdef0\nvcpus: 7\n")
    rc, report = doctor(world)
    checks = by_id(report)
    assert rc == 1 and checks["instance"]["status"] == "fail"
    assert "vcpus (7) must equal cores (4) x threads_per_core (2)" in checks["instance"]["found"]
    assert checks["instance"]["fix"].startswith(f"edit {world}/emulator/instance.yaml")
    assert checks["allocator"]["fix"] == checks["instance"]["fix"]
    # the allocator's own file is fine: its check does not blame it
    assert checks["allocator-config"]["status"] != "fail"


def test_fewer_hugepages_present_than_requested(world: Path) -> None:
    with open(world / "emulator/instance.yaml", "a") as fh:
        fh.write("hugepages_reservable_mib: 200\n")
    rc, report = doctor(world)
    hp = by_id(report)["hugepages"]
    assert rc == 1 and hp["status"] == "fail"
    # bootstrap/nitro-enclaves-allocator rolls the pages back when it cannot set them all: none stay
    assert hp["found"] == "requested 512 MiB, present 0 MiB (none): 512 MiB short"
    assert "hugepages_reservable_mib" in hp["fix"]
    # the allocator service (model) failed too, with the allocator's own words
    assert "Failed to configure entire amount of requested memory" in by_id(report)["allocator"]["found"]


def test_missing_group_membership(world: Path) -> None:
    # the emulator's device stand-in, owned by a group the operator is not in, as /dev/nitro_enclaves is root:ne 0660
    require(is_root(), "chgrp to another group needs root")
    run = world / "emulator" / "run"
    run.mkdir(parents=True, exist_ok=True)
    os.chown(run, 0, 4243)
    run.chmod(0o770)
    from console.doctor_inputs import emulator_inputs

    inputs = emulator_inputs(emulator_backend())
    inputs.identity = Identity(4242, (4242,), "operator")
    report = run_doctor(inputs)
    access = next(c for c in report.checks if c.id == "access")
    assert access.status == "fail"
    assert "operator (uid 4242) is not in group" in access.found
    assert access.fix is not None and access.fix.startswith("sudo usermod -aG ") and " operator" in access.fix
    # added to the group after logging in: the session still lacks it, and usermod would change nothing
    inputs.identity = Identity(4242, (4242,), "operator", db_gids=(4242, 4243))
    access = next(c for c in run_doctor(inputs).checks if c.id == "access")
    assert access.status == "fail" and "is in group" in access.found and "but this session is not" in access.found
    assert access.fix is not None and access.fix.startswith("newgrp ")
    # in the group: passes
    inputs.identity = Identity(4242, (4242, 4243), "operator")
    assert next(c for c in run_doctor(inputs).checks if c.id == "access").status == "ok"
    # in the group, but the group may not use it: the stand-in is a folder, so 0770 (the device's 0660 would lock it)
    run.chmod(0o700)
    access = next(c for c in run_doctor(inputs).checks if c.id == "access")
    assert access.status == "fail" and "the group may not read and write it" in access.found
    assert access.fix == (f"sudo groupadd -f ne && sudo chgrp ne {run} && sudo chmod 0770 {run} && "
                          "sudo usermod -aG ne operator")


def test_no_docker_daemon(world: Path, tmp_path: Path) -> None:
    rc, report = doctor(world, env={"DOCKER_HOST": f"unix://{tmp_path}/no-dockerd.sock"})
    docker = by_id(report)["docker"]
    assert rc == 1 and failing(report) == {"docker"}
    assert docker["found"].startswith(f"no answer at unix://{tmp_path}/no-dockerd.sock")
    assert docker["fix"]


def test_docker_socket_this_user_may_not_open(scratch_dirs: Callable[..., Path]) -> None:
    """The daemon answers root but not this user: the fix is the docker group, not starting dockerd."""
    import pwd
    import socket as socketlib

    require(is_root() and shutil.which("setpriv") is not None, "needs root and setpriv to run the check as another user")
    nobody = pwd.getpwnam("nobody")
    folder = scratch_dirs("nd-dock-")
    folder.chmod(0o755)
    listener = socketlib.socket(socketlib.AF_UNIX)
    try:
        listener.bind(str(folder / "docker.sock"))
        listener.listen()
        (folder / "docker.sock").chmod(0o600)  # root's, as /var/run/docker.sock is root:docker 0660
        script = (
            "import json, types; from core.ops.doctor import check_docker; "
            f"c = check_docker(types.SimpleNamespace(docker_host='unix://{folder}/docker.sock', backend='real', timeout=3)); "
            "print(json.dumps([c.status, c.found, c.fix]))"
        )
        done = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                               sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HOME": str(folder)})
        assert done.returncode == 0, done.stderr
        status, found, fix = json.loads(done.stdout)
        assert status == "fail" and found == f"permission denied at unix://{folder}/docker.sock"
        assert fix.startswith("sudo usermod -aG docker $USER")
    finally:
        listener.close()


def test_clock_30_minutes_off(world: Path) -> None:
    with DateServer(timedelta(minutes=-30)) as meta:
        rc, report = doctor(world, "--metadata-url", meta.url)
    clock = by_id(report)["clock"]
    assert rc == 1 and failing(report) == {"clock"}
    seconds = int(clock["found"].split("s against")[0])
    assert 1790 <= seconds <= 1810, clock  # this host is 30 minutes ahead of the reference
    assert "chronyc makestep" in clock["fix"]


def test_clock_from_the_kms_endpoint_when_no_metadata_endpoint(world: Path) -> None:
    # the second time source (on a Nitro parent: the region's KMS endpoint) is asked only for its Date
    with DateServer(timedelta(minutes=30)) as kms:
        rc, report = doctor(world, "--time-url", kms.url.replace("/latest/meta-data/instance-type", "/"))
    clock = by_id(report)["clock"]
    assert rc == 1 and failing(report) == {"clock"} and kms.hits == 1
    assert -1810 <= int(clock["found"].split("s against")[0]) <= -1790  # this host is 30 minutes behind
    assert "against the Date header of http://127.0.0.1:" in clock["found"]
    assert by_id(report)["metadata"]["found"].startswith("no endpoint configured")


def test_clock_reference_is_injectable(world: Path) -> None:
    from console.doctor_inputs import emulator_inputs

    inputs = emulator_inputs(emulator_backend())
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    inputs.now = lambda: now
    for offset, status in ((timedelta(seconds=1), "ok"), (timedelta(seconds=30), "warn"), (timedelta(minutes=30), "fail")):
        inputs.reference = lambda o=offset: TimeReference(now + o, "a test clock")
        clock = next(c for c in run_doctor(inputs).checks if c.id == "clock")
        assert clock.status == status, (offset, clock)


def test_unreachable_metadata_fails_within_the_timeout(world: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    rc, report = doctor(world, "--metadata-url", f"http://127.0.0.1:{port}/", "--timeout", "0.5")
    assert rc == 1 and "metadata" in failing(report)
    assert "hop-limit 2" in by_id(report)["metadata"]["fix"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    require(is_root(), "mounting a tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk(world: Path, tiny_tmpfs: Path) -> None:
    home = tiny_tmpfs / "home"
    home.mkdir()
    for name in ("emulator",):
        subprocess.run(["cp", "-a", str(world / name), str(home)], check=True)
    with open(tiny_tmpfs / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    rc, report = doctor(home)
    disk = by_id(report)["disk"]
    assert rc == 1 and failing(report) == {"disk"}, report
    assert disk["found"].startswith("0 MiB free of 2 MiB under")
    assert "du -xh" in disk["fix"]


def test_text_output_and_fix_hints(world: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NITRODECK_METADATA_URL", "ECS_CONTAINER_METADATA_URI_V4")}
    env.update(NITRODECK_HOME=str(world), DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    base = [sys.executable, "-m", "console", "--backend", "emulator", "doctor"]
    plain = subprocess.run(base, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    hints = subprocess.run([*base, "--fix-hints"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert plain.returncode == hints.returncode == 1
    assert "[FAIL] Docker daemon: no answer at" in plain.stdout and "fix:" not in plain.stdout
    assert "run with --fix-hints" in plain.stdout
    assert "       fix: start dockerd" in hints.stdout
    assert "1 failing (emulator)" in hints.stdout


# --- a Nitro parent, as a fake sysfs tree ---------------------------------------------------------------


def fake_parent(root: Path, *, pages_2m: int, ne_cpus: str, offline: tuple[int, ...]) -> None:
    (root / "sys/module/nitro_enclaves/parameters").mkdir(parents=True)
    (root / "sys/module/nitro_enclaves/parameters/ne_cpus").write_text(ne_cpus + "\n")
    cpu = root / "sys/devices/system/cpu"
    (cpu / "cpu0/topology").mkdir(parents=True)
    (cpu / "present").write_text("0-3\n")
    (cpu / "cpu0/topology/thread_siblings_list").write_text("0,2\n")
    for n in range(4):
        (cpu / f"cpu{n}").mkdir(exist_ok=True)
        (cpu / f"cpu{n}/online").write_text("0\n" if n in offline else "1\n")
    node = root / "sys/devices/system/node/node0"
    for size, count in ((2048, pages_2m), (1048576, 0)):
        d = node / f"hugepages/hugepages-{size}kB"
        d.mkdir(parents=True)
        (d / "nr_hugepages").write_text(f"{count}\n")
        (d / "free_hugepages").write_text(f"{count}\n")
    (node / "cpulist").write_text("0-3\n")
    (root / "proc").mkdir()
    (root / "proc/meminfo").write_text("MemTotal:        7864320 kB\nMemAvailable:    3145728 kB\n")
    (root / "etc").mkdir()
    (root / "etc/allocator.yaml").write_text("---\nmemory_mib: 3072\ncpu_count: 2\n")
    (root / "etc/vsock-proxy.yaml").write_text("allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n")
    (root / "dev").mkdir()


def parent_report(root: Path) -> dict[str, object]:
    inputs = host_inputs(
        root / "home", root=root, allocator_config=root / "etc/allocator.yaml",
        vsock_proxy_config=root / "etc/vsock-proxy.yaml", nitro_cli=(sys.executable, "-m", "emulator"),
    )
    inputs.metadata_url = None
    return {c.id: c for c in run_doctor(inputs).checks}


def test_parent_reservation_read_from_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=1536, ne_cpus="1,3", offline=(1, 3))
    checks = parent_report(tmp_path)
    assert checks["driver"].status == "ok"
    assert checks["hugepages"].status == "ok", checks["hugepages"]
    assert checks["hugepages"].found == "requested 3072 MiB, present 3072 MiB (1536x2M@node0)"
    assert checks["cpu-pool"].status == "ok" and "offlined [1,3]" in checks["cpu-pool"].found
    assert checks["allocator-config"].status == "ok", checks["allocator-config"]
    assert checks["parent-memory"].found == "3072 MiB available"
    assert checks["instance"].found.endswith("4 vCPUs (2 per core), 7680 MiB, 1 NUMA node(s)")
    # no /dev/nitro_enclaves in the fake tree: enclaves are not enabled
    assert checks["device"].status == "fail" and "--enclave-options Enabled=true" in str(checks["device"].fix)


def test_parent_sysfs_from_nitrodeck_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a container that sees the host's sysfs at another path ($NITRODECK_SYSFS)
    fake_parent(tmp_path, pages_2m=1536, ne_cpus="1,3", offline=(1, 3))
    from core.ops.doctor import host_allocator, host_machine

    moved = tmp_path / "host-sys"
    (tmp_path / "sys").rename(moved)
    view = host_allocator(tmp_path, tmp_path / "etc/allocator.yaml", sysfs=moved)
    assert view.pool_cpus == [1, 3] and view.offline_cpus == [1, 3] and sum(p.total_mib for p in view.hugepages) == 3072
    machine = host_machine(tmp_path, sysfs=moved)
    assert machine is not None and machine.vcpus == 4
    monkeypatch.setenv("NITRODECK_SYSFS", str(moved))
    from core.backends.real import sysfs_root

    assert sysfs_root() == moved


def test_parent_fragmented_and_pool_cpus_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    fake_parent(tmp_path, pages_2m=1000, ne_cpus="1,3", offline=(1,))
    checks = parent_report(tmp_path)
    assert checks["hugepages"].status == "fail"
    assert checks["hugepages"].found.endswith("1072 MiB short")
    assert "fragmented" in str(checks["hugepages"].fix)
    assert checks["cpu-pool"].status == "fail" and "still online" in checks["cpu-pool"].found
    # the allowlist lists us-east-1's KMS only
    assert checks["vsock-proxy"].status == "fail" and "kms.eu-west-1.amazonaws.com:443" in checks["vsock-proxy"].found


def test_parent_instance_type_from_dmi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=1536, ne_cpus="1,3", offline=(1, 3))
    dmi = tmp_path / "sys/devices/virtual/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "board_asset_tag").write_text("i-0123456789abcdef0\n")
    (dmi / "product_name").write_text("c6i.xlarge\n")
    instance = parent_report(tmp_path)["instance"]
    assert instance.status == "ok" and instance.found.startswith("c6i.xlarge i-0123456789abcdef0: 4 vCPUs")
    for kind in ("t3.xlarge", "t4g.large", "m7i-flex.xlarge", "mac2.metal"):
        (dmi / "product_name").write_text(kind + "\n")
        instance = parent_report(tmp_path)["instance"]
        assert instance.status == "fail" and "have no Nitro Enclaves" in instance.found, kind
        assert "c6i.xlarge" in str(instance.fix)


def test_parent_hugepages_on_another_node_than_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # enough pages in all, but on node 1 while the CPU pool is on node 0: the driver refuses such memory
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=0, ne_cpus="1,3", offline=(1, 3))
    node1 = tmp_path / "sys/devices/system/node/node1"
    d = node1 / "hugepages/hugepages-2048kB"
    d.mkdir(parents=True)
    (d / "nr_hugepages").write_text("1536\n")
    (d / "free_hugepages").write_text("1536\n")
    (node1 / "cpulist").write_text("\n")
    for cpu in (1, 3):  # offlined CPUs keep their node link
        (tmp_path / f"sys/devices/system/cpu/cpu{cpu}/node0").mkdir()
    hp = parent_report(tmp_path)["hugepages"]
    assert hp.status == "fail"
    assert hp.found.endswith("0 MiB on the CPU pool's node 0, 3072 MiB short")


def test_parent_without_a_cpu_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the driver loaded, the allocator never ran: no allocator.yaml, ne_cpus empty
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=0, ne_cpus="", offline=())
    (tmp_path / "etc/allocator.yaml").unlink()
    checks = parent_report(tmp_path)
    assert checks["cpu-pool"].status == "fail", checks["cpu-pool"]
    assert checks["cpu-pool"].found == "requested ?, pool [empty]: no CPU is set aside for enclaves"
    assert "systemctl restart nitro-enclaves-allocator.service" in str(checks["cpu-pool"].fix)


def test_parent_cpu_pool_checked_against_sysfs_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 vCPUs, two threads per core: CPU n and n + 2 are siblings (EC2's numbering; offlined CPUs have no
    # topology folder to ask)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=1536, ne_cpus="1,3", offline=(1, 3))
    for pool, problem in (("0,2", "cpu_pool takes 0,2 of CPU 0's core (0,2)"),
                          ("1", "cpu_pool splits cores: add their sibling(s) 3"),
                          ("1,3,5,7", "cpu_pool names CPU(s) 5,7 the machine does not have (0-3)")):
        (tmp_path / "etc/allocator.yaml").write_text(f"---\nmemory_mib: 3072\ncpu_pool: {pool}\n")
        config = parent_report(tmp_path)["allocator-config"]
        assert config.status == "fail" and problem in config.found, (pool, config)
    (tmp_path / "etc/allocator.yaml").write_text("---\nmemory_mib: 3072\ncpu_pool: 1,3\n")
    assert parent_report(tmp_path)["allocator-config"].status == "ok"


def test_parent_allocator_file_without_its_start_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake_parent(tmp_path, pages_2m=1536, ne_cpus="1,3", offline=(1, 3))
    (tmp_path / "etc/allocator.yaml").write_text("memory_mib: 3072\ncpu_count: 2\n")
    config = parent_report(tmp_path)["allocator-config"]
    assert config.status == "fail" and "missing memory reservation" in config.found
    assert str(config.fix).startswith(f"edit {tmp_path}/etc/allocator.yaml, then: sudo systemctl restart")


# --- parsers -------------------------------------------------------------------------------------------


def test_allocator_request_parser() -> None:
    assert parse_allocator_request(b"---\nmemory_mib: 3072\ncpu_count: 2\n", "a") == (3072, 2, None)
    assert parse_allocator_request(b"# c\n---\nmemory_mib: 512\ncpu_pool: 2,3,6-7\n", "a") == (512, None, [2, 3, 6, 7])
    for bad in (b"---\nmemory_mib: 1\n", b"---\ncpu_count: 2\n", b"---\nmemory_mib: x\ncpu_count: 2\n", b"[1]", b"{",
                b"---\nmemory_mib: 1\ncpu_count: 2\ncpu_pool: 1\n", b"a" * (MAX_CONFIG_BYTES + 1),
                b"---\nmemory_mib: 512\ncpu_count: 0\n"):
        with pytest.raises(NitrodeckError) as err:
            parse_allocator_request(bad, "allocator.yaml")
        assert err.value.where == "allocator.yaml"


@pytest.mark.parametrize(("text", "message"), [
    # valid YAML, all of them, and each stops nitro-enclaves-allocator's bash parser
    (b"memory_mib: 3072\ncpu_count: 2\n", "Config error: missing memory reservation (`memory_mib`)."),
    (b"---\nmemory_mib: 3072\n\ncpu_count: 2\n", "Error in allocator.yaml:3 - unexpected: "),
    (b"---\nmemory_mib: 3072\ncpu_count: 2", "Config error: missing CPU reservation"),
    (b"---\nmemory_mib: 3072\ncpu_count: 2\nenclaves: 1\n", "unexpected: enclaves"),
])
def test_allocator_request_is_read_as_the_allocator_reads_it(text: bytes, message: str) -> None:
    with pytest.raises(NitrodeckError) as err:
        parse_allocator_request(text, "allocator.yaml")
    assert message in err.value.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=MAX_CONFIG_BYTES + 16))
def test_allocator_request_parser_never_crashes(raw: bytes) -> None:
    try:
        mem, count, pool = parse_allocator_request(raw, "allocator.yaml")
    except (DoctorError, NitrodeckError):
        return
    assert isinstance(mem, int) and (count is None) != (pool is None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_http_date_never_crashes(text: str) -> None:
    when = _http_date(text)
    assert when is None or when.tzinfo is not None
