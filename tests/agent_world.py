"""Helpers for the agent's tests: an emulated host with enclaves, and `nitrodeck serve` as a real process."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core.models import BuildRequest, LaunchRequest
from core.ops.lifecycle import Lifecycle
from tests.conftest import REPO, wait_for

ALLOCATOR = "---\nmemory_mib: 512\ncpu_count: 8\n"
INSTANCE = "instance_id: i-0agent0000000001\nvcpus: 16\ncores: 8\nthreads_per_core: 2\nmemory_mib: 32768\n"


def write_world(home: Path, instance_id: str = "i-0agent0000000001") -> None:
    (home / "emulator" / "etc").mkdir(parents=True, exist_ok=True)
    (home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
    (home / "emulator" / "instance.yaml").write_text(INSTANCE.replace("i-0agent0000000001", instance_id))


def script_eif(lc: Lifecycle, tmp: Path, name: str, body: str = "echo up\nexec sleep 300\n") -> Path:
    rootfs = tmp / f"rootfs-{name}"
    rootfs.mkdir()
    script = rootfs / "run.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    out = tmp / f"{name}.eif"
    lc.build(BuildRequest(str(out), rootfs=str(rootfs), cmd="/bin/sh /run.sh", name=name))
    return out


def launch(lc: Lifecycle, eif: Path, name: str, debug: bool = False) -> str:
    return lc.launch(LaunchRequest(str(eif), 64, cpu_count=2, debug_mode=debug, name=name)).enclave_id


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    url: str
    stderr: Path

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def request(self, method: str, path: str, token: str | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, token: str | None = None) -> object:
        status, _, body = self.request("GET", path, token)
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_agent(tmp: Path, *args: str, listen: str = "127.0.0.1:0", stdout: int | None = subprocess.DEVNULL,
                prefix: list[str] | None = None, env: dict[str, str] | None = None) -> Agent:
    """`nitrodeck serve` in its own process; its URL comes from the line it prints on stderr."""
    err = tmp / f"agent-{time.monotonic_ns()}.stderr"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "console", "serve", "--listen", listen, "--safety-poll", "2", *args],
            cwd=REPO, stdout=stdout, stderr=fh, env=env or os.environ.copy(),
        )

    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited with {proc.returncode}: {err.read_text()}")
        for line in err.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ")[1].split()[0]
        return None

    return Agent(proc, wait_for(url, timeout=60), err)
