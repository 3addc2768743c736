"""Benchmark: what the idle dashboard costs, against `htop -d 10` in the same kind of terminal.

With 4 emulated enclaves running, the dashboard and then htop each run for --seconds in a tmux pane
of 120x40; the CPU time of the pane's whole process tree (including every process it started and
reaped, e.g. describe-enclaves) is read from /proc before and after. Targets (issue 13): the
dashboard at most 0.5 % of a core, and at most 2.5x htop's. Also measured: the first paint with the
enclaves listed (target 0.5 s from starting the process; the frame console/first_frame.py
draws before Textual has loaded) and to the dashboard itself, the time from an external
`nitro-emu terminate-enclave` to the row changing on screen (target 300 ms; the safety poll is 30 s,
so only the watcher can do it), and the cost while a debug console streams 100 lines/s (target 5 %).

    .venv/bin/python benchmarks/tui_idle.py [--seconds 60]

Not a test: numbers depend on the machine. Everything lives in a temporary NITRODECK_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
ALLOCATOR = "---\nmemory_mib: 1000\ncpu_count: 8\n"  # 2 MiB pages: room for four small enclaves
INSTANCE = "instance_id: i-0be0c0be0c0be0c00\nvcpus: 16\ncores: 8\nthreads_per_core: 2\nmemory_mib: 32768\n"


def emu(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    res = subprocess.run([sys.executable, "-m", "emulator", *args], env=env, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise SystemExit(f"nitro-emu {args[0]} failed: {res.stderr}")
    return json.loads(res.stdout) if res.stdout.strip() else {}


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


class Pane:
    def __init__(self, socket: str, command: str, env: dict[str, str]) -> None:
        self.socket = socket
        subprocess.run(
            ["tmux", "-L", socket, "new-session", "-d", "-x", "120", "-y", "40", "-s", "bench", command],
            check=True, env=env, timeout=20,
        )
        pid = subprocess.run(
            ["tmux", "-L", socket, "display-message", "-p", "-t", "bench", "#{pane_pid}"],
            capture_output=True, text=True, check=True, timeout=20,
        ).stdout.strip()
        self.root = psutil.Process(int(pid))

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "bench"], capture_output=True, text=True, timeout=20
        ).stdout

    def wait_for(self, text: str, timeout: float = 60, poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise SystemExit(f"{text!r} never showed:\n{self.screen()}")
            time.sleep(poll)

    def wait_for_all(self, texts: list[str], timeout: float = 60, poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not all(text in (shown := self.screen()) for text in texts):
            if time.monotonic() > deadline:
                raise SystemExit(f"{texts!r} never all showed:\n{shown}")
            time.sleep(poll)

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", "bench", key], timeout=20)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def idle_cost(pane: Pane, seconds: float) -> float:
    """% of one core used by the pane's process tree over ``seconds``."""
    before, start = tree_cpu(pane.root), time.monotonic()
    time.sleep(seconds)
    after, wall = tree_cpu(pane.root), time.monotonic() - start
    return 100.0 * (after - before) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    for tool in ("tmux", "htop"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install {tool})", file=sys.stderr)
            return 2
    home = Path(tempfile.mkdtemp(prefix="ndb-", dir="/tmp"))
    env = {**os.environ, "NITRODECK_HOME": str(home), "NITRODECK_BACKEND": "emulator", "TERM": "xterm-256color"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    # .pyc files as an installed package has them (pip compiles at install; benchmarks/startup.py does the
    # same): with PYTHONDONTWRITEBYTECODE in the caller's environment every start compiled nitrodeck's
    # modules from source (~115 ms of CPU on the 2-core machine), which no operator's start does
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / p) for p in ("console", "core", "emulator", "enclave_app"))],
                   env=env, check=True, capture_output=True, timeout=300)
    socket = f"nd-bench-{os.getpid()}"
    try:
        (home / "emulator" / "etc").mkdir(parents=True)
        (home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
        (home / "emulator" / "instance.yaml").write_text(INSTANCE)
        rootfs = home / "rootfs"
        (rootfs / "app").mkdir(parents=True)
        (rootfs / "app" / "run.sh").write_text("#!/bin/sh\necho idle\nexec sleep 100000\n")
        (rootfs / "app" / "run.sh").chmod(0o755)
        eif = home / "idle.eif"
        emu(env, "build-enclave", "--rootfs", str(rootfs), "--cmd", "/app/run.sh", "--output-file", str(eif))
        (rootfs / "app" / "chatty.py").write_text(
            "import time\nn = 0\nwhile True:\n    n += 1\n    print(f'chatty line {n}', flush=True)\n    time.sleep(0.01)\n"
        )
        chatty = home / "chatty.eif"
        emu(env, "build-enclave", "--rootfs", str(rootfs), "--cmd", "python3 /app/chatty.py", "--output-file", str(chatty))
        ids = [
            emu(env, "run-enclave", "--eif-path", str(eif), "--cpu-count", "2", "--memory", "64",
                "--enclave-name", f"idle-{n}")["EnclaveID"]
            for n in range(4)
        ]

        started = time.monotonic()
        dash = Pane(socket + "-dash", f"cd {REPO} && {sys.executable} -m console", env)
        # the first frame: every enclave's name and state on screen (console/first_frame.py draws it
        # before Textual has loaded); then the dashboard itself, which takes keys
        dash.wait_for_all([f"idle-{n}" for n in range(4)], poll=0.01)
        first_paint = time.monotonic() - started
        dash.wait_for("(4 running)", poll=0.01)
        interactive = time.monotonic() - started
        time.sleep(2)  # let start-up work settle
        dash_pct = idle_cost(dash, args.seconds)

        # an external terminate: how long until the row changes on screen?
        start = time.monotonic()
        emu(env, "terminate-enclave", "--enclave-id", ids[0])
        terminated = time.monotonic()
        dash.wait_for("(3 running", timeout=40, poll=0.01)  # "(3 running, 1 exited)"
        shown = time.monotonic()

        # a debug console at 100 lines/s, the only enclave, so it is selected and streams
        for enclave_id in ids[1:]:
            emu(env, "terminate-enclave", "--enclave-id", enclave_id)
        emu(env, "run-enclave", "--eif-path", str(chatty), "--cpu-count", "2", "--memory", "64",
            "--enclave-name", "chatty", "--debug-mode")
        dash.wait_for("(1 running", timeout=60)
        dash.keys("Up", "Up", "Up", "Up", "Up")  # running rows come first: select chatty
        dash.wait_for("chatty line", timeout=60)
        time.sleep(2)
        stream_pct = idle_cost(dash, args.seconds)
        dash.close()

        top = Pane(socket + "-htop", "htop -d 10", env)
        time.sleep(2)
        htop_pct = idle_cost(top, args.seconds)
        top.close()

        ratio = dash_pct / htop_pct if htop_pct > 0 else float("inf")
        print(f"dashboard idle, 4 enclaves: {dash_pct:.3f} % of a core over {args.seconds:.0f} s (target <= 0.5 %)")
        print(f"htop -d 10:                 {htop_pct:.3f} % of a core")
        print(f"ratio dashboard/htop:       {ratio:.2f} (target <= 2.5)")
        print(f"first paint with 4 enclaves listed: {1000 * first_paint:.0f} ms (target <= 500 ms)")
        print(f"the dashboard itself (takes keys):  {1000 * interactive:.0f} ms")
        print(f"debug console at 100 lines/s: {stream_pct:.3f} % of a core (target <= 5 %)")
        print(f"external terminate -> row changed: {1000 * (shown - terminated):.0f} ms "
              f"(terminate itself took {1000 * (terminated - start):.0f} ms; target <= 300 ms)")
    finally:
        for suffix in ("-dash", "-htop"):
            subprocess.run(["tmux", "-L", socket + suffix, "kill-server"], capture_output=True, timeout=20)
        subprocess.run([sys.executable, "-m", "emulator", "terminate-enclave", "--all"], env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
