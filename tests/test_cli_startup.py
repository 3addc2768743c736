"""Start-up: a command imports only what it uses. `nitrodeck --help` loads no command module, and no
headless command loads Textual (only the TUI does)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import COMMANDS, build_parser, command_of
from tests.conftest import REPO

PROBE = """
import json, sys
from console.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'console', 'emulator', 'core', 'enclave_app', 'asyncio'))
print('MODULES=' + json.dumps(mods), file=sys.stderr)
"""


def loaded_by(nd_home: Path, *argv: str) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("MODULES="))
    return list(json.loads(line.removeprefix("MODULES=")))


def test_the_command_table_is_what_the_modules_register() -> None:
    for module in sorted({m for m, _ in COMMANDS.values()}):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(module).register(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        table = {name: help_line for name, (owner, help_line) in COMMANDS.items() if owner == module}
        assert helps == table, f"console/cli.py COMMANDS disagrees with {module}"


def test_the_subcommand_is_found_after_global_options() -> None:
    assert command_of(["--backend", "emulator", "--read-only", "status", "--json"]) == "status"
    assert command_of(["--refresh", "5"]) is None
    assert command_of(["--json"]) is None
    assert command_of(["describe-enclaves"]) == "describe-enclaves"
    # a subcommand's full parser comes only with its own module; the others are placeholders
    parser = build_parser("status")
    args = parser.parse_args(["status", "--json"])
    assert args.command == "status" and args.json is True


def test_help_imports_no_command_module(nd_home: Path) -> None:
    mods = loaded_by(nd_home, "--help")
    assert not [m for m in mods if m.startswith(("console.cmd_", "console.compat", "textual", "emulator", "core.ops"))], mods


@pytest.mark.parametrize("argv", [["status", "--json"], ["describe-enclaves"], ["describe", "--json"],
                                  ["fleet", "--json", "--hosts", "/nonexistent/hosts.yaml"]])
def test_headless_commands_import_no_textual(nd_home: Path, argv: list[str]) -> None:
    mods = loaded_by(nd_home, *argv)
    assert "console.cli" in mods  # the probe really ran the CLI
    assert not [m for m in mods if m.split(".")[0] == "textual" or m == "console.app"], mods
    # asyncio (and the ssl it pulls in) is for the console stream only
    assert "asyncio" not in mods
