"""Issue 9 items 9 and 10: terminal safety of strings from outside, and the smaller operator-facing fixes."""

from __future__ import annotations

import argparse
import json
import os
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
from tests.conftest import REPO

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
    assert done.returncode != 0 and _no_controls(done.stderr) and "Traceback" not in done.stderr


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
    assert done.returncode in (2, 13), done.stderr


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
