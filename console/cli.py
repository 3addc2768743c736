"""`nitrodeck`: no subcommand opens the TUI; subcommands are the same operations, headless.

Each command module registers its subcommands through ``register(subparsers)`` and sets
``func(args) -> int`` as the handler. Output conventions (nitro-cli's): JSON on stdout with
``--json``, tables for people otherwise, progress on stderr; typed errors become a message on
stderr (or an error object with ``--json``) and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from core.errors import NitrodeckError

# One module per area; each owns its subcommands. Kept as names so a broken optional area
# cannot stop the others from loading.
COMMAND_MODULES = (
    "console.cmd_lifecycle",  # status, build, describe-eif, launch, terminate, console
    "console.cmd_attest",  # verify-attestation, trust
    "console.cmd_sign",  # sign, attest, bridge
    "console.cmd_kms",  # proxy, kms seal, provision, up
    "console.cmd_doctor",  # doctor
    "console.compat",  # nitro-cli's own names: describe-enclaves, run-enclave, terminate-enclave, ...
)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("auto", "real", "emulator"),
        default=None,
        help="nitro-cli backend (default: $NITRODECK_BACKEND, else real when nitro-cli and /dev/nitro_enclaves exist)",
    )
    parser.add_argument("--read-only", action="store_true", help="refuse every mutating action")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nitrodeck",
        description="Operations console for AWS Nitro Enclaves. With no subcommand, opens the TUI.",
    )
    add_global_options(parser)
    parser.add_argument(
        "--refresh",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="TUI safety poll: describe-enclaves runs on every change the kernel reports, and this often anyway",
    )
    parser.add_argument("--version", action="store_true",
                        help="print nitrodeck's version, the backend and (real backend) nitro-cli --version")
    parser.add_argument("--json", dest="top_json", action="store_true",
                        help="without a terminal and without a subcommand: print `status --json`")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def report_error(err: NitrodeckError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": err.to_dict()}, indent=2))
    print(f"nitrodeck: {err}", file=sys.stderr)
    return err.exit_status


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that an unknown flag after a subcommand shows that subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        command = getattr(args, "command", None)
        if sub is not None and command in sub.choices:
            sub.choices[command].error(f"unrecognized arguments: {' '.join(extra)}")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if args.version:
        from console.compat import print_version

        return print_version(args.backend)
    if args.command is None:
        if not has_terminal():
            # cron, `ssh host nitrodeck`, CI: no TUI to draw; print what it would show, once.
            from console.cmd_lifecycle import cmd_status

            args.json = args.top_json
            args.watch = None
            args.func = cmd_status
        else:
            from console.app import run_tui

            return run_tui(args)
    try:
        return int(args.func(args) or 0)
    except NitrodeckError as err:
        return report_error(err, wants_json(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `nitrodeck status --json | head`: the reader left; exit quietly like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
