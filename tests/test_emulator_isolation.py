"""emulator.isolation as an unprivileged user: a user namespace, then the network namespace, RLIMIT_AS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import is_root, require, scratch_dir

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import isolation as iso
plan = iso.IsolationPlan(host_cpus=[0], memory_mib=64, cgroup=None)
iso.prepare_child()
child = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: iso.child_setup(plan))
try:
    time.sleep(0.2)
    report = iso.observe(child.pid, plan)
    report["uid"] = open(f"/proc/{child.pid}/status").read().split("Uid:")[1].split()[0]
    report["pgid_is_pid"] = __import__("os").getpgid(child.pid) == child.pid
    print(json.dumps(report))
finally:
    child.kill()
    child.wait()
"""


def test_unprivileged_enclave_process_gets_user_and_network_namespace() -> None:
    require(is_root(), "switching to an unprivileged user needs root")
    setpriv = shutil.which("setpriv")
    system_python = "/usr/bin/python3"
    require(setpriv is not None and os.path.exists(system_python), "setpriv and /usr/bin/python3 needed")
    # only the standard-library module is copied: the unprivileged user may not read the checkout,
    # nor pytest's tmp folders (0700 parents)
    with scratch_dir("nd-iso-") as folder:
        _probe(folder, setpriv, system_python)


def _probe(tmp_path: Path, setpriv: str | None, system_python: str) -> None:
    shutil.copy(REPO / "emulator" / "isolation.py", tmp_path / "isolation.py")
    (tmp_path / "probe.py").write_text(PROBE)
    tmp_path.chmod(0o755)
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    res = subprocess.run(
        [str(setpriv), "--reuid=65534", "--regid=65534", "--clear-groups", system_python, str(tmp_path / "probe.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=30, cwd="/",
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["uid"] == "65534"
    assert report["UserNamespace"] is True and report["NetworkNamespace"] is True
    assert report["HostCPUs"] == [0] and report["pgid_is_pid"] is True
    assert report["MemoryLimit"] == {"Kind": "rlimit-as", "Bytes": 1024 * 1024 * 1024}
