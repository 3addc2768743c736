"""Shared fixtures: an isolated nitrodeck home per test, the private dockerd, a moto server.

Tests that need root or Docker call :func:`require` with a reason: on a laptop they skip and say
why; under CI (CI=true) they fail instead, and a CI run with any skipped test fails at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import emulator.backend  # noqa: E402,F401 - registers the emulator backend and its stand-in blobs

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when a real part the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def is_root() -> bool:
    return os.geteuid() == 0


def testdata(*parts: str) -> Path:
    path = TESTDATA.joinpath(*parts)
    require(path.exists(), f"shared test data missing: {path}")
    return path


def kill_world(home: Path) -> None:
    """Kill every process started for this home (emulator supervisors, enclave processes, servers)."""
    me = os.getpid()
    victims = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get("NITRODECK_HOME") == str(home):
                victims.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in victims:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=5)


@contextlib.contextmanager
def scratch_dir(prefix: str, *, world: bool = False, dir: str = "/tmp") -> Iterator[Path]:
    """A folder of the test's own, removed when the block ends (passed or failed).

    For what pytest's tmp_path cannot hold: Unix sockets (AF_UNIX paths are limited to 107 bytes, and
    tmp_path's are long), module-scoped worlds, or a tmpfs (``dir="/dev/shm"``). ``world``: a
    NITRODECK_HOME whose processes (emulator supervisors, enclaves, servers) are killed first, so
    nothing still writes into the folder while it is removed.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        yield path
    finally:
        if world:
            kill_world(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch_dirs() -> Iterator[Callable[..., Path]]:
    """``scratch_dirs(prefix, world=..., dir=...)`` makes a :func:`scratch_dir` that lasts until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda prefix, **kw: stack.enter_context(scratch_dir(prefix, **kw))


@pytest.fixture
def nd_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh NITRODECK_HOME (short path: it holds Unix sockets) with the emulator backend."""
    with scratch_dir("ndh-", world=True) as home:
        monkeypatch.setenv("NITRODECK_HOME", str(home))
        monkeypatch.setenv("NITRODECK_BACKEND", "emulator")
        yield home


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """The private dockerd that `make test` starts (scripts/with-dockerd.sh), or $DOCKER_HOST."""
    import docker

    require(bool(os.environ.get("DOCKER_HOST")), "no Docker engine: run through `make test` as root")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        require(False, f"Docker engine not reachable at {os.environ.get('DOCKER_HOST')}: {exc}")
    return client


@pytest.fixture(scope="session")
def moto_kms() -> Iterator[str]:
    """A real moto HTTP server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        print(f"\nCI: {len(skipped)} test(s) skipped; in CI nothing may skip:")
        for rep in skipped[:20]:
            print(f"  {rep.nodeid}: {rep.longrepr}")
        session.exitstatus = 1
