"""nitro-cli's muscle memory on the CLI: a script written for nitro-cli runs unchanged with nitro-cli
replaced by nitrodeck; nitro-cli's flag spellings on nitrodeck's own commands; relative paths; the
no-terminal path; --version; help lines and subcommand usage. All against the real emulator."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.argtypes import abs_path, key_or_path, resolve_path
from console.cli import build_parser
from console.launch_config import MAX_CONFIG, parse_launch_config
from core.errors import UsageError
from tests.conftest import REPO, require
from tests.test_e2e_emulator import build_rootfs, write_world

SCRIPT = REPO / "tests" / "data" / "nitro_cli_deploy.sh"


def nd(*args: str, cwd: Path = REPO, timeout: float = 90, env: dict[str, str] | None = None,
       stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ.copy(), stdin=stdin)


def build_eif(tmp: Path, out: Path) -> None:
    done = nd("build-enclave", "--rootfs", str(build_rootfs(tmp)), "--cmd", "/bin/sh /run.sh",
              "--output-file", str(out))
    assert done.returncode == 0, done.stderr
    # nitro-cli's build-enclave output: only the measurements on stdout, progress on stderr
    assert list(json.loads(done.stdout)) == ["Measurements"]
    assert "Enclave Image successfully created." in done.stderr


@pytest.mark.slow
def test_nitro_cli_script_runs_unchanged(nd_home: Path, tmp_path: Path) -> None:
    require(shutil.which("jq") is not None, "jq is not installed (scripts/system-deps.sh installs it)")
    write_world(nd_home)
    work = tmp_path / "deploy"
    work.mkdir()
    build_eif(tmp_path, work / "app.eif")
    # `nitro-cli` on PATH is nitrodeck: a wrapper, as an operator's symlink would be
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "nitro-cli"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m console "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    # run from elsewhere: the script cds into its folder and uses relative paths from there
    done = subprocess.run(["/bin/sh", str(SCRIPT), str(work)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deployed and removed i-" in done.stdout
    run = json.loads((work / "run.json").read_text())
    assert list(run) == ["EnclaveName", "EnclaveID", "ProcessID", "EnclaveCID", "NumberOfCPUs", "CPUIDs",
                         "MemoryMiB"]
    assert run["EnclaveName"] == "app"
    # the mutating nitro-cli commands were audited like nitrodeck's own
    audit = [json.loads(line) for line in (nd_home / "audit.log").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["build", "launch", "terminate"]
    assert audit[1]["argv"][:2] == ["nitro-emu", "run-enclave"]
    assert all(a["result"] == "ok" for a in audit)


@pytest.mark.slow
def test_nitro_cli_flags_on_nitrodeck_commands(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    build_eif(tmp_path, tmp_path / "app.eif")
    # a relative --eif-path, resolved against the caller's cwd; --enclave-name / --enclave-cid aliases
    done = nd("launch", "--eif-path", "app.eif", "--memory", "64", "--cpu-count", "2", "--enclave-name", "web",
              "--enclave-cid", "21", "--debug-mode", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["EnclaveName"] == "web" and run["EnclaveCID"] == 21
    # describe --json is nitro-cli's array
    enclaves = json.loads(nd("describe", "--json").stdout)
    assert isinstance(enclaves, list) and enclaves[0]["EnclaveID"] == run["EnclaveID"]
    assert "backend" not in enclaves[0] and enclaves[0]["State"] == "RUNNING"
    # console: nitrodeck's name with nitro-cli's flags prints nitro-cli's preamble
    done = nd("console", "--enclave-id", run["EnclaveID"], "--disconnect-timeout", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Connecting to the console for enclave 21...\n")
    assert "hello from the enclave" in done.stdout
    # describe-eif: FILE gives nitrodeck's view, --eif-path nitro-cli's exact JSON (relative, too)
    done = nd("describe-eif", "app.eif", cwd=tmp_path)
    assert done.returncode == 0 and "EIF version" in done.stdout
    done = nd("describe-eif", "--eif-path", "app.eif", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout))[:3] == ["EifVersion", "Measurements", "IsSigned"]
    # read-only refuses nitro-cli's mutating commands before the backend runs, and audits nothing
    done = nd("--read-only", "terminate-enclave", "--all")
    assert done.returncode == 13 and "read-only" in done.stderr and done.stdout == ""
    # terminate with nitro-cli's spelling on nitrodeck's name
    done = nd("terminate", "--enclave-name", "web", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["terminated"][0]["EnclaveID"] == run["EnclaveID"]
    # nitro-cli's errors come through as nitro-cli prints them, with its exit status
    done = nd("terminate-enclave", "--enclave-name", "web")
    # no enclave has that name any more: E58, nitro-cli's naming error, with its exit status
    assert done.returncode == 58 and done.stderr.startswith("[ E58 ] Naming error.") and done.stdout == ""
    # launch --config: run-enclave's JSON file, its relative eif_path resolved against the caller's cwd
    (tmp_path / "enclave.json").write_text(json.dumps(
        {"eif_path": "app.eif", "memory_mib": 64, "cpu_count": 2, "enclave_name": "cfg", "debug_mode": True}))
    done = nd("launch", "--config", "enclave.json", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["EnclaveName"] == "cfg"
    done = nd("launch", "--config", "enclave.json", "--memory", "64", cwd=tmp_path)
    assert done.returncode == 2 and "--config" in done.stderr
    done = nd("terminate-enclave", "--all")
    assert done.returncode == 0 and [t["EnclaveName"] for t in json.loads(done.stdout)] == ["cfg"]
    # run-enclave --config (nitro-cli's name): the config's relative eif_path is resolved against the
    # caller's cwd before the backend sees it; the journal has the EIF, the audit line the caller's file
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "enclave.json").write_text(json.dumps(
        {"eif_path": "app.eif", "memory_mib": 64, "cpu_count": 2, "enclave_name": "cfg2", "debug_mode": True}))
    done = nd("run-enclave", "--config", "conf/enclave.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["EnclaveName"] == "cfg2"
    journal = [json.loads(line) for line in (nd_home / "journal.jsonl").read_text().splitlines()]
    assert [e["eif_path"] for e in journal if e["event"] == "launched" and e["name"] == "cfg2"] == [
        str(tmp_path / "app.eif")]
    audit = json.loads((nd_home / "audit.log").read_text().splitlines()[-1])
    assert audit["argv"] == ["nitro-emu", "run-enclave", "--config", str(tmp_path / "conf" / "enclave.json")]
    # nitro-emu itself, as nitro-cli: a relative --eif-path opens in the caller's folder
    done = subprocess.run([sys.executable, "-m", "emulator", "run-enclave", "--eif-path", "app.eif", "--memory",
                           "64", "--cpu-count", "2", "--enclave-name", "direct"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["EnclaveName"] == "direct"
    done = nd("terminate-enclave", "--all")
    assert done.returncode == 0 and sorted(t["EnclaveName"] for t in json.loads(done.stdout)) == ["cfg2", "direct"]
    done = nd("explain", "--error-code", "E26")
    assert done.returncode == 0 and "memory" in done.stderr.lower()


def test_pcr(nd_home: Path, tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"hello")
    done = nd("pcr", "--input", "in.bin", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == ["PCR"] and len(json.loads(done.stdout)["PCR"]) == 96


def test_no_terminal_prints_status_and_exits(nd_home: Path) -> None:
    # no subcommand, stdin and stdout not terminals (cron, ssh host nitrodeck, CI): status, then exit
    done = nd(stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "backend:" in done.stdout and "Enclaves (0)" in done.stdout and "\x1b[" not in done.stdout
    done = nd("--json", stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "emulator"


@pytest.mark.parametrize("tty", ["stdin", "stdout"])
def test_no_terminal_on_one_side_prints_status_and_exits(nd_home: Path, tty: str) -> None:
    # `nitrodeck | less` (stdin a terminal) and `nitrodeck < /dev/null` from a terminal: no TUI either
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console"], cwd=REPO, stderr=subprocess.PIPE,
            stdin=slave if tty == "stdin" else subprocess.DEVNULL,
            stdout=slave if tty == "stdout" else subprocess.PIPE)
        os.close(slave)
        out, err = proc.communicate(timeout=30)  # a TUI waiting for keys would never exit
        if tty == "stdout":
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed and drained
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            out = b"".join(chunks)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "backend:" in text and "Enclaves (0)" in text and "\x1b[" not in text


def test_one_shot_status_samples_host_cpu_over_an_interval(nd_home: Path) -> None:
    # psutil's first sample of a process is always 0.0: a one-shot status must not report it
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = nd("status", "--json", timeout=60)
    finally:
        burner.kill()
        burner.wait(10)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["host"]["cpu_percent"] > 0.0


def test_status_watch_json_lines(nd_home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "console", "status", "--watch", "0.2", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)
    assert first["backend"] == second["backend"] == "emulator"
    assert 0.0 <= second["host"]["cpu_percent"] <= 100.0


def test_json_before_the_subcommand(nd_home: Path) -> None:
    # `nitrodeck --json describe` is `nitrodeck describe --json` (nitro-cli's array: [] with nothing running)
    done = nd("--json", "describe")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    done = nd("--json", "pins")
    assert done.returncode == 0
    pins = json.loads(done.stdout)
    assert pins["backend"] == "emulator" and pins["pins"] == []


def test_status_watch_redraws_in_place_on_a_terminal(nd_home: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "console", "status", "--watch", "0.2"], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    try:
        while seen.count(b"backend:") < 2:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "status --watch printed no second frame"
            seen += os.read(master, 65536)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
    # each frame starts at the top left and erases what a longer one left: redrawn, not scrolled
    frames = seen.split(b"\x1b[H")
    assert len(frames) >= 3 and all(b"backend:" in f for f in frames[1:3]) and b"\x1b[J" in frames[1]


def test_version(nd_home: Path) -> None:
    done = nd("--version")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("nitrodeck ") and lines[1].startswith("backend: emulator (nitro-emu")
    # the real backend without nitro-cli: says so instead of failing
    done = nd("--backend", "real", "--version", env=dict(os.environ, PATH="/nonexistent"))
    assert done.returncode == 0 and "nitro-cli: unavailable" in done.stdout


def test_unknown_flag_shows_the_subcommands_usage(nd_home: Path) -> None:
    done = nd("status", "--bogus")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: nitrodeck status") and "--bogus" in done.stderr
    done = nd("run-enclave", "--memroy", "64")
    assert done.returncode == 2 and done.stderr.startswith("usage: nitrodeck run-enclave")
    # at any depth: the innermost subcommand's usage
    done = nd("trust", "emulator-root", "--bogus")
    assert done.returncode == 2 and done.stderr.startswith("usage: nitrodeck trust emulator-root")
    assert "unrecognized arguments: --bogus" in done.stderr


def test_every_flag_has_a_help_line() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {action.option_strings or action.dest}")

    walk(build_parser(), "nitrodeck")
    assert missing == []


def test_paths_are_resolved_against_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_path("a/b.eif") == str(tmp_path / "a" / "b.eif")
    assert resolve_path("~/x") == str(Path.home() / "x")
    assert key_or_path("arn:aws:kms:us-east-1:111122223333:key/abc") == "arn:aws:kms:us-east-1:111122223333:key/abc"
    args = build_parser().parse_args(["run-enclave", "--eif-path", "app.eif", "--memory", "64", "--cpu-count", "2"])
    assert args.nc_eif_path == str(tmp_path / "app.eif")
    for bad in ("", "x" * 5000, "a\0b"):
        with pytest.raises(argparse.ArgumentTypeError):
            resolve_path(bad)


#: arguments whose names look like paths but are not (or are read by nitrodeck itself as typed)
NOT_PATHS = {
    "doctor --metadata-url", "pin --as", "unpin key", "verify-attestation --public-key",
    "sign --payload",  # TEXT or @FILE, read by this process from the caller's cwd
}
PATHY = re.compile(r"path|file|dir|cert|config|eif|rootfs|tar|pem|private_key|^in_file$|^out$|ciphertext|hosts|"
                   r"^input$|pcrs|root|key$|metadata", re.I)


def test_every_path_argument_is_resolved() -> None:
    """Every argument that names a file or folder, in every subcommand at every depth, is made absolute
    against the caller's cwd as it is parsed (argtypes), so no relative path reaches a backend."""
    resolvers = {resolve_path, abs_path, key_or_path}
    unresolved, seen = [], set()

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}".strip())
            elif action.nargs != 0 and (PATHY.search(action.dest.removeprefix("nc_"))
                                         or PATHY.search(str(action.metavar or ""))):
                label = f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
                seen.add(label)
                if action.type not in resolvers and label not in NOT_PATHS:
                    unresolved.append(label)

    walk(build_parser(), "")
    assert unresolved == []
    assert {"pin eif", "pin --eif-path", "run-enclave --config", "launch --config", "build-enclave --output-file",
            "serve --tls-cert", "kms seal --out", "sign --expect-pcrs"} <= seen


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=5000))
def test_resolve_path_never_crashes(text: str) -> None:
    try:
        out = resolve_path(text)
    except argparse.ArgumentTypeError:
        return
    assert os.path.isabs(out)


def test_launch_config_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_launch_config(b'{"eif_path": "a.eif", "memory_mib": 512, "cpu_ids": [2, 3], "attach_console": true, "x": 1}')
    assert cfg.request.eif_path == str(tmp_path / "a.eif") and cfg.request.cpu_ids == [2, 3]
    assert cfg.attach_console and cfg.request.debug_mode  # attaching implies debug mode, as in nitro-cli
    for bad, says in (
        (b"[]", "JSON object"), (b"{", "invalid JSON"), (b'{"memory_mib": 1, "cpu_count": 1}', "eif_path"),
        (b'{"eif_path": "a", "memory_mib": 64}', "missing both"),
        (b'{"eif_path": "a", "memory_mib": 64, "cpu_count": 2, "cpu_ids": [1]}', "both"),
        (b'{"eif_path": "a", "memory_mib": true, "cpu_count": 2}', "invalid type"),
        (b'{"eif_path": "a", "memory_mib": 64, "cpu_ids": ["x"]}', "cpu_ids"),
        (b" " * (MAX_CONFIG + 1), "larger"),
    ):
        with pytest.raises(UsageError, match=says):
            parse_launch_config(bad)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.dictionaries(
    st.sampled_from(["eif_path", "memory_mib", "cpu_count", "cpu_ids", "enclave_cid", "enclave_name", "debug_mode",
                     "attach_console"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=4)),
).map(lambda d: json.dumps(d).encode())))
def test_launch_config_never_crashes(raw: bytes) -> None:
    try:
        cfg = parse_launch_config(raw)
    except UsageError:
        return
    assert os.path.isabs(cfg.request.eif_path) and (cfg.request.cpu_count is None) != (cfg.request.cpu_ids is None)


def test_nitro_cli_spellings_are_journaled(nd_home: Path) -> None:
    # a launch and a terminate made with nitro-cli's spellings are in the journal like nitrodeck's own:
    # otherwise the terminate would later be recorded as an exit nobody asked for
    from tests.test_emulator_run import build, configure

    configure(nd_home)
    eif = build(nd_home, "echo up\nexec sleep 300", "spelled")
    ran = nd("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--enclave-name", "spelled")
    assert ran.returncode == 0, ran.stderr
    enclave_id = json.loads(ran.stdout)["EnclaveID"]  # stdout still carries nitro-cli's JSON, untouched
    gone = nd("terminate-enclave", "--enclave-id", enclave_id)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["Terminated"] is True
    nd("status", "--json")  # a describe that would record a false `exited`
    events = [json.loads(line) for line in nd("events", "--json").stdout.splitlines()]
    mine = [(e["event"], e.get("name")) for e in events if e.get("enclave_id") == enclave_id]
    assert mine == [("launched", "spelled"), ("terminated", "spelled")]
    launched = next(e for e in events if e["event"] == "launched")
    assert launched["eif_path"] == str(eif) and launched["cid"] >= 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4), max_size=4),
       st.text(max_size=40))
def test_json_objects_reads_what_was_printed(objects: list[dict], tail: str) -> None:  # type: ignore[type-arg]
    from console.compat import _json_objects

    text = "".join(json.dumps(o, indent=2) + "\n" for o in objects)
    got = _json_objects(text + ("" if tail.lstrip().startswith(("{", "[")) else tail))
    assert got[: len(objects)] == objects
