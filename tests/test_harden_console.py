"""Issue 9 items 9 and 10: terminal safety of strings from outside, and the smaller operator-facing fixes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.output import Check, checklist, key_values, table
from core.errors import NitrodeckError
from core.models import EnclaveInfo, LaunchRequest
from core.text import is_safe, safe_text
from tests.conftest import REPO, scratch_dir

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\rnice\u202eevil\x9b31m"


def nd(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ.copy())


def _no_controls(text: str) -> bool:
    """Nothing a terminal would interpret: newlines separate lines, everything else is visible."""
    return all(is_safe(line) for line in text.split("\n"))


# --- item 9: terminal safety ---------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_safe_text_leaves_nothing_a_terminal_interprets(value: str) -> None:
    shown = safe_text(value)
    assert is_safe(shown)
    assert "\n" not in shown and "\x1b" not in shown
    if is_safe(value):
        assert shown == value  # ordinary text is untouched
    multi = safe_text(value, multiline=True)
    assert _no_controls(multi) and multi.count("\n") == value.count("\n")


def test_safe_text_shows_what_it_escaped() -> None:
    assert safe_text(HOSTILE) == "\\x1b]0;pwned\\x07\\x1b[2J\\x0dnice\\u202eevil\\x9b31m"


def test_tables_key_values_and_checklists_escape_outside_strings() -> None:
    out = "\n".join([
        table([[HOSTILE, 1]], ["NAME", "CID"]),
        key_values([("image", HOSTILE), (HOSTILE, "x")]),
        checklist([Check(HOSTILE, False, HOSTILE)]),
    ])
    assert _no_controls(out) and "\\x1b]0;pwned" in out


def test_describe_eif_and_errors_never_drive_the_terminal(nd_home: Path) -> None:
    from core.eif.build import build_eif
    from tests.test_build import T1, make_rootfs, rootfs_req

    result = build_eif(rootfs_req(nd_home, make_rootfs(nd_home / "root"), "evil.eif", name=HOSTILE,
                                  version=HOSTILE), build_time=T1)
    done = nd("describe-eif", result.output_file)  # nitrodeck's human view
    assert done.returncode == 0, done.stderr
    assert _no_controls(done.stdout) and "\\x1b]0;pwned" in done.stdout
    as_json = nd("describe-eif", "--eif-path", result.output_file)  # nitro-cli's JSON
    assert json.loads(as_json.stdout)["ImageName"] == HOSTILE  # JSON keeps the raw value
    # an error that quotes the hostile value
    done = nd("terminate", HOSTILE)
    # no enclave has that name: nitrodeck's ND-NO-ENCLAVE, exit 11 (nitro-cli's E11 status)
    assert done.returncode == 11 and _no_controls(done.stderr) and "Traceback" not in done.stderr
    assert "no running enclave has the ID or name" in done.stderr


def test_tui_renderers_escape_names_images_and_errors() -> None:
    from console.screens.base import error_text
    from console.screens.launch import eif_text
    from console.widgets.detail import render_detail
    from core.models import EifInfo, Measurements

    pcrs = Measurements(pcr0="00" * 48, pcr1="11" * 48, pcr2="22" * 48)
    enclave = EnclaveInfo(name=HOSTILE, enclave_id="i-0-enc1", process_id=1, cid=16, cpu_count=2, cpu_ids=[1, 5],
                          memory_mib=64, state="RUNNING", flags="NONE", measurements=pcrs, image_name=HOSTILE,
                          image_version=HOSTILE, metadata={"CustomKey": HOSTILE, HOSTILE: "v"})
    info = EifInfo(version=4, measurements=pcrs, is_signed=False, check_crc=True, image_name=HOSTILE,
                   image_version=HOSTILE)
    texts = [
        render_detail(enclave, "unpinned", None, eif=info).plain,
        eif_text(Path("/x/" + HOSTILE), info, 1024).plain,
        error_text(NitrodeckError(f"no enclave {HOSTILE}", where=HOSTILE, hint=HOSTILE)).plain,
    ]
    for text in texts:
        assert _no_controls(text), text


async def test_console_pane_lines_are_escaped() -> None:
    from textual.app import App, ComposeResult

    from console.widgets.console_pane import ConsolePane

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield ConsolePane()

    async with Host().run_test() as pilot:
        pane = pilot.app.query_one(ConsolePane)
        assert pane._shape([HOSTILE]) == [safe_text(HOSTILE)]


# --- item 10: smaller ----------------------------------------------------------------------------


def test_names_beginning_with_a_dash_reach_the_backend_as_values() -> None:
    from core.backends.driver import run_args

    argv = run_args(LaunchRequest(eif_path="-odd.eif", memory_mib=64, cpu_count=2, name="-dash"))
    assert "--enclave-name=-dash" in argv and "--eif-path=-odd.eif" in argv
    from emulator.cli import build_parser

    parsed = build_parser().parse_args(argv)
    assert parsed.enclave_name == "-dash" and parsed.eif_path == "-odd.eif"


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((path + (name,), child))
                found.extend(_leaves(child, path + (name,)))
    return found


def test_read_only_is_accepted_after_every_subcommand() -> None:
    from console.cli import build_parser

    leaves = _leaves(build_parser())
    assert {("kms", "seal"), ("provision",), ("up",), ("kms", "local-server")} <= {p for p, _ in leaves}
    for path, parser in leaves:
        assert "--read-only" in parser._option_string_actions, path
        assert "--backend" in parser._option_string_actions, path


def test_kms_seal_read_only_after_the_subcommand_is_refused_as_read_only(nd_home: Path) -> None:
    done = nd("kms", "seal", "--key-id", "k", "--eif", str(nd_home / "none.eif"), "--apply", "--read-only")
    assert "unrecognized arguments" not in done.stderr
    assert done.returncode == 13, done.stderr  # ND-READ-ONLY, before the missing EIF is even looked at
    assert "kms-seal is refused: read-only: the --read-only flag was given" in done.stderr


def test_local_server_is_refused_read_only_and_writes_nothing(nd_home: Path) -> None:
    done = nd("kms", "local-server", "--read-only", timeout=30)
    assert done.returncode == 13, done.stderr
    assert not (nd_home / "emulator").exists()


def test_allowlist_entries_of_dead_local_servers_are_pruned(tmp_path: Path) -> None:
    from core.channel.proxy import AllowEntry, load_allowlist
    from emulator.kms import allow_in_proxy_config, withdraw_from_proxy_config

    cfg = tmp_path / "vsock-proxy.yaml"
    cfg.write_text("allowlist:\n- {address: 127.0.0.1, port: 1}\n")  # the operator's own: never touched
    for port in (9, 19, 29):  # three starts whose servers died without stopping (nothing listens)
        allow_in_proxy_config(port, cfg)
    assert load_allowlist(cfg) == [AllowEntry("127.0.0.1", 1), AllowEntry("127.0.0.1", 29)]
    withdraw_from_proxy_config(29, cfg)
    assert load_allowlist(cfg) == [AllowEntry("127.0.0.1", 1)]


def test_home_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import home

    root = tmp_path / "fresh" / "home"
    monkeypatch.setenv("NITRODECK_HOME", str(root))
    monkeypatch.setenv("NITRODECK_BACKEND", "emulator")
    old = os.umask(0o022)
    try:
        home.ensure(home.emulator_etc())
    finally:
        os.umask(old)
    for folder in (root, root / "emulator", root / "emulator" / "etc"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o755  # not ours: the usual mode


def test_trust_emulator_root_creates_a_private_home(tmp_path: Path) -> None:
    root = tmp_path / "h"
    env = {**os.environ, "NITRODECK_HOME": str(root), "NITRODECK_BACKEND": "emulator"}
    done = nd("trust", "emulator-root", env=env)
    assert done.returncode == 0, done.stderr
    for folder in (root, root / "emulator", root / "emulator" / "etc"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_hints_never_send_the_operator_back_to_the_failing_command() -> None:
    from core.backends.driver import hint_for
    from core.backends.registry import select_backend

    backend = select_backend("emulator")
    for code in ("E35", "E19"):
        hint = hint_for(code, "EIF file parsing error.", backend, command="describe-eif") or ""
        assert hint and "describe-eif" not in hint
    assert "describe-eif" in (hint_for("E35", "EIF file parsing error.", backend, command="run-enclave") or "")
    full = hint_for("E36", "Enclave boot failure.\nNo space left on device", backend, command="run-enclave") or ""
    assert "disk is full" in full and "command" not in full


def test_sigterm_to_nitrodeck_does_not_orphan_its_backend_child(tmp_path: Path) -> None:
    """The driver's children run in their own session; they must still die with nitrodeck."""
    import signal
    import time

    import psutil

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = (
        "import sys\n"
        "from core.backends.base import Backend\n"
        "from core.backends.driver import NitroCli\n"
        f"NitroCli(Backend('real', (sys.executable, '-c', {child!r}), 'nitro-cli', None), timeout=120).run(['x'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        assert psutil.pid_exists(child_pid)
        proc.send_signal(signal.SIGTERM)  # Python's default: die at once, no cleanup code runs
        proc.wait(20)
        gone = False
        for _ in range(200):
            try:
                gone = psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                break
            time.sleep(0.05)
        assert gone, "the backend child outlived nitrodeck"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_trust_emulator_root_read_only_prints_but_never_creates(tmp_path: Path) -> None:
    root = tmp_path / "h"
    env = {**os.environ, "NITRODECK_HOME": str(root), "NITRODECK_BACKEND": "emulator"}
    done = nd("--read-only", "trust", "emulator-root", env=env)
    assert done.returncode == 13, done.stderr
    assert not root.exists()  # nothing created, not even the home
    made = nd("trust", "emulator-root", env=env)
    assert made.returncode == 0
    before = sorted(p.name for p in (root / "emulator" / "etc").iterdir())
    again = nd("trust", "emulator-root", "--read-only", "--fingerprint", env=env)
    fingerprint = nd("trust", "emulator-root", "--fingerprint", env=env)
    assert again.returncode == 0 and again.stdout == fingerprint.stdout
    assert nd("--read-only", "trust", "emulator-root", env=env).stdout == made.stdout
    assert sorted(p.name for p in (root / "emulator" / "etc").iterdir()) == before


# --- item 10: read-only writes nothing, under the emulator too -------------------------------------

Tree = dict[str, tuple[int, int, int, str]]


def tree_of(root: Path) -> Tree:
    """Every entry under ``root``: mode, size, mtime, and the bytes' digest for regular files."""
    import hashlib

    out: Tree = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def changed(before: Tree, after: Tree) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def read_only_commands(eif: Path) -> list[list[str]]:
    """Every read a read-only operator has on the command line (no terminal: bare `nitrodeck` is status)."""
    return [
        ["status", "--read-only", "--json"],
        ["--read-only", "status"],
        ["describe", "--read-only", "--json"],
        ["events", "--read-only", "--json"],
        ["doctor", "--read-only", "--json"],
        ["pins", "--read-only", "--json"],
        ["describe-enclaves", "--read-only"],
        ["describe-eif", "--eif-path", str(eif), "--read-only"],
        ["trust", "emulator-root", "--read-only"],
        ["--read-only"],
    ]


def read_status(args: list[str], done: subprocess.CompletedProcess[str], refused: dict[str, int] | None = None) -> int:
    """The exit status a read must end with: 0; doctor's own verdict (1 when one of its checks fails, e.g.
    no Docker daemon here: read from its report); or the status given in ``refused`` for that command."""
    command = next((a for a in args if not a.startswith("-")), "status")  # bare `nitrodeck` is status
    if command == "doctor":
        return 0 if json.loads(done.stdout)["ok"] else 1
    return (refused or {}).get(command, 0)


def serve_read_only(env: dict[str, str], logs: Path) -> list[str]:
    """`nitrodeck serve` (always read-only) answering every endpoint once, then stopped."""
    from tests.agent_world import start_agent

    agent = start_agent(logs, env=env)
    try:
        return [f"{path} {agent.request('GET', path)[0]}" for path in ("/status", "/enclaves", "/metrics",
                                                                        "/events", "/healthz")]
    finally:
        agent.stop()


@pytest.mark.slow
def test_read_only_reads_write_nothing_on_a_fresh_home(tmp_path: Path) -> None:
    """Under the emulator a read-only status used to create instance.yaml, allocator.yaml, the allocator's
    state and log, and two lock files: nitro-emu is now told (NITRODECK_READ_ONLY) and creates nothing,
    and the emulator's model is computed in memory. Not even the home folder is made."""
    world = tmp_path / "world"
    world.mkdir()
    home = world / "h"
    env = {**os.environ, "NITRODECK_HOME": str(home), "NITRODECK_BACKEND": "emulator"}
    env.pop("NITRODECK_READ_ONLY", None)
    before = tree_of(world)
    for args in read_only_commands(world / "none.eif"):
        done = nd(*args, env=env)
        # describe-eif of a missing file is nitro-cli's E35; the emulator's root cannot be made read-only (13)
        assert done.returncode == read_status(args, done, {"describe-eif": 35, "trust": 13}), (args, done.stderr)
        assert changed(before, tree_of(world)) == [], args
    # the environment variable works as the flag does
    assert nd("status", "--json", env={**env, "NITRODECK_READ_ONLY": "1"}).returncode == 0
    assert nd("describe-enclaves", env={**env, "NITRODECK_READ_ONLY": "1"}).returncode == 0
    assert [line.split()[1] for line in serve_read_only(env, tmp_path)] == ["200"] * 5
    assert changed(before, tree_of(world)) == [] and not home.exists()

    # an honest answer: no enclaves, no instance yet, and the pools the first real use will make
    ro = json.loads(nd("status", "--read-only", "--json", env=env).stdout)
    assert ro["enclaves"] == [] and ro["instance_id"] is None and ro["read_only"] is True
    rw = json.loads(nd("status", "--json", env=env).stdout)
    assert rw["instance_id"].startswith("i-") and (home / "emulator" / "instance.yaml").is_file()
    assert ro["cpu_pool"] == rw["cpu_pool"] and ro["hugepages"] == rw["hugepages"]
    assert "instance:  none yet" in nd("status", "--read-only", env={**env, "NITRODECK_HOME": str(world / "g")}).stdout


def test_nitro_emu_read_only_refuses_changes_and_writes_nothing(tmp_path: Path) -> None:
    """NITRODECK_READ_ONLY reaches nitro-emu as a property of its own, as any caller of it may set it."""
    world = tmp_path / "world"
    world.mkdir()
    env = {**os.environ, "NITRODECK_HOME": str(world / "h"), "NITRODECK_READ_ONLY": "1"}

    def emu(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60, env=env)

    before = tree_of(world)
    described = emu("describe-enclaves")
    assert described.returncode == 0 and json.loads(described.stdout) == []
    for args in (["run-enclave", "--eif-path", str(world / "x.eif"), "--memory", "128", "--cpu-count", "2"],
                 ["terminate-enclave", "--all"], ["restart-allocator"],
                 ["build-enclave", "--rootfs", str(world), "--cmd", "true", "--output-file", str(world / "x.eif")]):
        refused = emu(*args)
        assert refused.returncode == 13 and "NITRODECK_READ_ONLY is set" in refused.stderr, (args, refused.stderr)
    # a failure's err log is not written either: the block carries its text, where the driver reads the cause
    failed = emu("describe-eif", "--eif-path", str(world / "none.eif"))
    assert failed.returncode == 35
    assert "The error log could not be written" in failed.stderr and "read-only" in failed.stderr
    assert "Failed to initialize EIF reader" in failed.stderr
    assert changed(before, tree_of(world)) == []


@pytest.mark.slow
def test_read_only_reads_change_nothing_in_a_populated_world(nd_home: Path, tmp_path: Path) -> None:
    """After a real launch, every read-only read (CLI, nitro-cli's words, the agent, the console) leaves
    the home byte for byte as it was, and still reports the running enclave."""
    from core.ops.lifecycle import Lifecycle
    from tests.agent_world import script_eif

    env = {**os.environ}
    env.pop("NITRODECK_READ_ONLY", None)
    lc = Lifecycle()
    eif = script_eif(lc, tmp_path, "quiet", "echo up\nexec sleep 300\n")  # one console line, then silence
    done = nd("launch", "--eif-path", str(eif), "--memory", "128", "--cpu-count", "2", "--name", "quiet",
              "--debug-mode", "--json", env=env)
    assert done.returncode == 0, done.stderr
    enclave_id = json.loads(done.stdout)["EnclaveID"]
    # the console has its line, and a plain status has made whatever a first use makes
    assert nd("console", "quiet", "--disconnect-timeout", "2", env=env).stdout.splitlines()[-1] == "up"
    rw = json.loads(nd("status", "--json", env=env).stdout)

    before = {**tree_of(nd_home), **{f"eif/{k}": v for k, v in tree_of(tmp_path).items()}}

    def now() -> Tree:
        return {**tree_of(nd_home), **{f"eif/{k}": v for k, v in tree_of(tmp_path).items()}}

    with scratch_dir("ndlogs-") as logs:  # outside tmp_path, whose tree is compared
        for args in [*read_only_commands(eif), ["console", "quiet", "--disconnect-timeout", "1", "--read-only"],
                     ["console", "--enclave-name", "quiet", "--disconnect-timeout", "1", "--read-only"]]:
            done = nd(*args, env=env)
            assert done.returncode == read_status(args, done), (args, done.stderr)
            assert changed(before, now()) == [], args
        assert [line.split()[1] for line in serve_read_only(env, logs)] == ["200"] * 5
    assert changed(before, now()) == []
    ro = json.loads(nd("status", "--read-only", "--json", env=env).stdout)
    assert [e["EnclaveID"] for e in ro["enclaves"]] == [enclave_id]
    assert ro["instance_id"] == rw["instance_id"] and ro["cpu_pool"] == rw["cpu_pool"]


@pytest.mark.slow
def test_read_only_notices_an_exit_without_writing_it(nd_home: Path, tmp_path: Path) -> None:
    """An enclave the journal lists as launched is gone (its process killed). `status --read-only` and the
    read-only agent used to append its `exited` event to the journal: now they leave the home byte for
    byte as it was, and still report the exit (status's exited list; the agent's /events, /events/stream
    and nitrodeck_enclave_exits_total) from their own memory. When a process that may write records the
    same exit, the agent still counts and streams it once."""
    import threading

    import psutil

    from core.ops.lifecycle import Lifecycle
    from tests.agent_world import launch, script_eif, start_agent
    from tests.conftest import wait_for
    from tests.test_agent import samples
    from tests.test_agent_events import read_sse

    env = {**os.environ}
    env.pop("NITRODECK_READ_ONLY", None)
    lc = Lifecycle()
    enclave_id = launch(lc, script_eif(lc, tmp_path, "doomed"), "doomed")
    supervisor = psutil.Process(next(e for e in lc.describe() if e.enclave_id == enclave_id).process_id)
    children = supervisor.children(recursive=True)
    assert children  # the enclave's processes
    for child in children:
        child.kill()

    def supervisor_gone() -> bool:
        try:
            return supervisor.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # the supervisor sees its enclave end, keeps how it ended, and goes (waiting on it writes nothing)
    wait_for(supervisor_gone, timeout=30)
    journal = nd_home / "journal.jsonl"
    assert [json.loads(x)["event"] for x in journal.read_text().splitlines()][-1] == "launched"

    def now() -> Tree:
        return {**tree_of(nd_home), **{f"eif/{k}": v for k, v in tree_of(tmp_path).items()}}

    before = now()
    done = nd("status", "--read-only", "--json", env=env)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["enclaves"] == [] and [e["enclave_id"] for e in status["exited"]] == [enclave_id]
    assert status["exited"][0]["name"] == "doomed"
    assert changed(before, now()) == []

    with scratch_dir("ndlogs-") as logs:
        agent = start_agent(logs, env=env)
        got: list[dict] = []
        connected = threading.Event()
        reader = threading.Thread(target=read_sse, args=(agent.host, agent.port, got, connected,
                                                         "/events/stream?since=10m"), daemon=True)
        reader.start()
        try:
            assert connected.wait(30)

            def exits_of(events: list[dict]) -> list[dict]:
                return [e for e in events if e.get("event") == "exited" and e.get("enclave_id") == enclave_id]

            wait_for(lambda: exits_of([e["data"] for e in got]), timeout=30)
            assert [e["event"] for e in got if e["data"].get("enclave_id") == enclave_id] == ["launched", "exited"]
            listed = agent.get_json("/events?since=10m")["events"]  # type: ignore[index]
            assert [e["event"] for e in listed if e["enclave_id"] == enclave_id] == ["launched", "exited"]

            def exits_counted() -> dict[str, float]:
                _, _, metrics = agent.request("GET", "/metrics")
                return {s.labels["name"]: s.value for s in samples(metrics.decode()).get("nitrodeck_enclave_exits_total", [])}

            assert exits_counted() == {"doomed": 1.0}
            assert changed(before, now()) == []  # the agent has refreshed at least once: still nothing written

            # a process that may write notices the same exit and records it: the agent counts it once
            assert nd("status", "--json", env=env).returncode == 0
            recorded = [json.loads(x) for x in journal.read_text().splitlines()]
            assert [e["event"] for e in recorded if e.get("enclave_id") == enclave_id] == ["launched", "exited"]
            wait_for(lambda: agent.get_json("/events?since=10m")["events"][-1] == recorded[-1], timeout=30)  # type: ignore[index]
            assert exits_counted() == {"doomed": 1.0}
            assert len(exits_of(agent.get_json("/events?since=10m")["events"])) == 1  # type: ignore[index,arg-type]
        finally:
            agent.stop()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert len(exits_of([e["data"] for e in got])) == 1  # streamed once, not again when it was recorded


def test_read_only_never_reclaims_a_dead_enclave_process(nd_home: Path, tmp_path: Path) -> None:
    """Reclaiming a dead supervisor's enclave (kill its processes, drop its folders, rewrite the table)
    is a change: read-only leaves the enclave out and says so; the next plain command reclaims it."""
    import signal

    from core.ops.lifecycle import Lifecycle
    from tests.agent_world import launch, script_eif

    env = {**os.environ}
    env.pop("NITRODECK_READ_ONLY", None)
    lc = Lifecycle()
    enclave_id = launch(lc, script_eif(lc, tmp_path, "victim"), "victim")
    supervisor = next(e for e in lc.describe() if e.enclave_id == enclave_id).process_id
    os.kill(supervisor, signal.SIGKILL)
    emulator_dir = nd_home / "emulator"
    before = tree_of(emulator_dir)
    ro = nd("describe-enclaves", "--read-only", env=env)
    assert ro.returncode == 0 and json.loads(ro.stdout) == []
    assert "is gone" in ro.stderr and "read-only" in ro.stderr
    assert changed(before, tree_of(emulator_dir)) == []
    rw = nd("describe-enclaves", env=env)
    assert rw.returncode == 0 and "its enclave was stopped and its resources released" in rw.stderr
    assert changed(before, tree_of(emulator_dir)) != []


@pytest.mark.slow
def test_read_only_tui_writes_nothing(tmp_path: Path) -> None:
    """The dashboard with --read-only in a real terminal, on a fresh home: refreshes and the doctor
    screen write nothing."""
    import time

    from tests.conftest import require
    from tests.test_tmux_tui import Term

    require(shutil.which("tmux") is not None, "tmux is not installed")
    with scratch_dir("ndtui-") as world:
        home = world / "h"
        socket = f"nd-ro-{os.getpid()}"
        command = (
            f"cd {REPO} && env -u COLUMNS -u LINES -u NITRODECK_READ_ONLY NITRODECK_HOME={home} NITRODECK_BACKEND=emulator "
            f"TERM=xterm-256color {sys.executable} -m console --read-only --refresh 0.5"
        )
        before = tree_of(world)
        subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "160", "-y", "48", "-s", "tui", command],
                       check=True, timeout=20)
        term = Term(socket, "tui")
        try:
            shown = term.wait_for("--read-only")
            assert "EMULATOR" in shown
            term.keys("d")
            term.wait_for("Doctor (emulator)")  # the checks have run
            term.keys("r")  # and again, from the doctor screen
            term.keys("escape")
            # a key right behind a lone Esc can arrive in the same read and be taken for alt+key
            term.wait_gone("Doctor (emulator)")
            term.keys("r")
            term.wait_for("refreshed")
            time.sleep(1.5)  # a few refreshes at 0.5 s
            term.keys("q")
            deadline = time.monotonic() + 20
            while term.tmux("list-sessions") and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            term.tmux("kill-server")
            assert changed(before, tree_of(world)) == [] and not home.exists()
