"""A Nitro parent in a temporary folder, for the real backend: the stand-in nitro-cli on PATH
(tests/fake_nitro_cli), a fake device and sysfs tree, configured the way an operator would, through
NITRODECK_DEVICE and NITRODECK_SYSFS. Used by test_real_mode.py, test_tui_real.py and test_up.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

FAKE_DIR = REPO / "tests" / "fake_nitro_cli"
INSTANCE_ID = "i-0fa4e0000000000a1"
PAGES_2M = 256  # 512 MiB of 2 MiB hugepages on node 0


@dataclass
class RealWorld:
    root: Path
    env: dict[str, str]

    @property
    def device(self) -> Path:
        return Path(self.env["NITRODECK_DEVICE"])

    @property
    def sysfs(self) -> Path:
        return Path(self.env["NITRODECK_SYSFS"])

    @property
    def state_file(self) -> Path:
        return Path(self.env["FAKE_NITRO_CLI_STATE"])

    @property
    def logs(self) -> Path:
        return Path(self.env["NITRO_CLI_LOGS_PATH"])

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {"enclaves": []}

    def set_knobs(self, **knobs: Any) -> None:
        state = self.state()
        state.update(knobs)
        self.state_file.write_text(json.dumps(state))

    def free_pages(self) -> int:
        return int((self.sysfs / "devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages").read_text())

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`nitrodeck ARGS` as a process, in this world."""
        return subprocess.run(
            [sys.executable, "-m", "console", *args], cwd=REPO, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )

    def cli_json(self, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> Any:
        done = self.cli(*args, "--json", env=env)
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    def eif(self, name: str = "app") -> Path:
        """A small EIF built by the emulator from a rootfs folder (no Docker needed)."""
        out = self.root / "eifs" / f"{name}.eif"
        if out.exists():
            return out
        rootfs = self.root / f"rootfs-{name}"
        (rootfs / "app").mkdir(parents=True, exist_ok=True)
        (rootfs / "app" / "run.sh").write_text("#!/bin/sh\necho hello\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "emulator", "build-enclave", "--rootfs", str(rootfs), "--cmd", "/app/run.sh",
             "--output-file", str(out), "--name", name, "--version", "1.0"],
            cwd=REPO, env={**self.env, "NITRODECK_BACKEND": "emulator"}, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return out


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_world(home: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> RealWorld:
    root = home / "parent"
    device = root / "dev" / "nitro_enclaves"
    write(device, "")
    sysfs = root / "sys"
    write(sysfs / "module/nitro_enclaves/parameters/ne_cpus", "1,3\n")
    pages = sysfs / "devices/system/node/node0/hugepages"
    write(pages / "hugepages-2048kB/nr_hugepages", f"{PAGES_2M}\n")
    write(pages / "hugepages-2048kB/free_hugepages", f"{PAGES_2M}\n")
    write(pages / "hugepages-1048576kB/nr_hugepages", "0\n")
    write(pages / "hugepages-1048576kB/free_hugepages", "0\n")
    write(sysfs / "devices/virtual/dmi/id/board_asset_tag", f"{INSTANCE_ID}\n")
    env = {
        **os.environ,
        "NITRODECK_HOME": str(home),
        "NITRODECK_BACKEND": "real",
        "NITRODECK_DEVICE": str(device),
        "NITRODECK_SYSFS": str(sysfs),
        "FAKE_NITRO_CLI_DEVICE": str(device),
        "FAKE_NITRO_CLI_SYSFS": str(sysfs),
        "FAKE_NITRO_CLI_STATE": str(root / "state.json"),
        "NITRO_CLI_LOGS_PATH": str(root / "logs"),
        "PATH": f"{FAKE_DIR}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("NITRODECK_READ_ONLY", None)
    if monkeypatch is not None:
        for key in ("NITRODECK_HOME", "NITRODECK_BACKEND", "NITRODECK_DEVICE", "NITRODECK_SYSFS",
                    "FAKE_NITRO_CLI_DEVICE", "FAKE_NITRO_CLI_SYSFS", "FAKE_NITRO_CLI_STATE", "NITRO_CLI_LOGS_PATH",
                    "PATH"):
            monkeypatch.setenv(key, env[key])
        monkeypatch.delenv("NITRODECK_READ_ONLY", raising=False)
    return RealWorld(root, env)
