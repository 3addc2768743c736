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
from core.text import safe_text

# Which module owns each subcommand, and its help line for `nitrodeck --help`. Only the module of the
# subcommand being run is imported (`--help` imports none), so a command pays for what it uses;
# tests/test_cli_startup.py checks this table against what the modules register.
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("console.cmd_lifecycle", "backend, instance, enclaves, CPU pool, hugepages, host load"),
    "describe": ("console.cmd_lifecycle", "running enclaves (describe-enclaves)"),
    "describe-eif": ("console.cmd_lifecycle", "measurements and metadata of an EIF file"),
    "build": ("console.cmd_lifecycle", "build an EIF (build-enclave)"),
    "launch": ("console.cmd_lifecycle", "start an enclave (run-enclave)"),
    "terminate": ("console.cmd_lifecycle", "stop an enclave by ID or name, or --all"),
    "console": ("console.cmd_lifecycle", "stream a debug-mode enclave's console"),
    "events": ("console.cmd_journal", "the lifecycle journal: launches, exits, terminations, pins"),
    "pin": ("console.cmd_journal", "pin an EIF's PCRs as expected (under its image name, or --as KEY)"),
    "pins": ("console.cmd_journal", "every pinned set of expected PCRs"),
    "unpin": ("console.cmd_journal", "remove a pin by its key"),
    "verify-attestation": (
        "console.cmd_attest",
        "verify an attestation document: signature, chain to a pinned root, PCRs, nonce, age",
    ),
    "trust": ("console.cmd_attest", "trust roots for attestation documents"),
    "sign": ("console.cmd_sign", "test-sign: the enclave signs a payload; verify signature and attestation"),
    "attest": ("console.cmd_sign", "fetch and verify an attestation document with a fresh nonce"),
    "bridge": ("console.cmd_sign", "TCP -> vsock bridge to an enclave (the socat sidecar)"),
    "proxy": ("console.cmd_kms", "vsock-proxy compatible relay: vsock LOCAL_PORT -> TCP REMOTE_ADDR:REMOTE_PORT"),
    "kms": ("console.cmd_kms", "KMS key release: seal a wallet key to an EIF, run the local KMS"),
    "provision": ("console.cmd_kms", "send a sealed key to an enclave; it releases it through KMS"),
    "up": ("console.cmd_kms", "ECS parent bootstrap: build, launch, bridge, proxy, provision, supervise"),
    "doctor": (
        "console.cmd_doctor",
        "check every precondition of running enclaves on this host (exit 1 when a check fails)",
    ),
    "serve": (
        "console.agent.cli",
        "read-only agent: /status, /enclaves, /metrics (Prometheus), /events, /healthz over HTTP",
    ),
    "fleet": ("console.agent.cli", "many parents at once, read through their agents (TUI; --json for one report)"),
    "run-enclave": ("console.compat", "nitro-cli run-enclave: starts a new enclave"),
    "describe-enclaves": ("console.compat", "nitro-cli describe-enclaves: returns a list of the running enclaves"),
    "terminate-enclave": ("console.compat", "nitro-cli terminate-enclave: terminates an enclave"),
    "build-enclave": ("console.compat", "nitro-cli build-enclave: builds an enclave image and saves it to a file"),
    "pcr": ("console.compat", "nitro-cli pcr: return the PCR hash value of the given input"),
    "explain": (
        "console.compat",
        "nitro-cli explain: display detailed information about an error returned by a nitro-cli command",
    ),
    "sign-eif": ("console.compat", "nitro-cli sign-eif: signs an existing enclave image file (replacing any signature)"),
}
#: global options that take a value (so the subcommand is the first other word)
_VALUED_GLOBALS = ("--backend", "--refresh")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("auto", "real", "emulator"),
        default=None,
        help="nitro-cli backend (default: $NITRODECK_BACKEND, else real when nitro-cli and /dev/nitro_enclaves exist)",
    )
    parser.add_argument("--read-only", action="store_true", help="refuse every mutating action")


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a global option or its value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED_GLOBALS:
            skip = True
        elif word == "--":
            return None
        elif not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command``'s module and placeholders for the rest
    (``None``: placeholders only, as `nitrodeck --help` needs; ``"*"``: every module, for tests)."""
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
                        help="before a subcommand: as its own --json; without a subcommand and without a "
                             "terminal: print `status --json`")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {m for m, _ in COMMANDS.values()} if command == "*" else {COMMANDS.get(command or "", ("", ""))[0]} - {""}
    for module in sorted(wanted):
        importlib.import_module(module).register(sub)
    for name, (_, help_line) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_line, add_help=False)
    # argparse lists subcommands in the order they were added: keep the table's order
    order = list(COMMANDS)
    sub._choices_actions.sort(key=lambda a: order.index(a.dest) if a.dest in order else len(order))
    accept_globals_everywhere(parser)
    return parser


def accept_globals_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--read-only`` after any subcommand, at any depth (``kms seal``, ``up``...),
    not only where a module remembered to add them. SUPPRESS keeps the main parser's value when absent."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in set(action.choices.values()):
            if "--read-only" not in child._option_string_actions:
                child.add_argument(
                    "--read-only", action="store_true", default=argparse.SUPPRESS,
                    help="refuse every mutating action (also accepted before the subcommand)",
                )
            if "--backend" not in child._option_string_actions:
                child.add_argument(
                    "--backend", choices=("auto", "real", "emulator"), default=argparse.SUPPRESS,
                    help="nitro-cli backend (also accepted before the subcommand)",
                )
            accept_globals_everywhere(child)


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def report_error(err: NitrodeckError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": err.to_dict()}, indent=2))
    print(f"nitrodeck: {safe_text(str(err), multiline=True)}", file=sys.stderr)
    return err.exit_status


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that an unknown flag after a subcommand shows that subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the deepest subcommand ``args`` chose (``kms seal``, ``trust emulator-root``)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, sub.dest, None) if sub is not None else None
        if sub is None or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(argv))
    args = parse(parser, argv)
    if args.top_json and getattr(args, "json", None) is False:
        args.json = True  # `nitrodeck --json describe` as `nitrodeck describe --json`
    if args.version:
        from console.compat import print_version

        return print_version(args.backend)
    if args.command is None:
        if not has_terminal() and not os.environ.get("TEXTUAL_DRIVER"):
            # (TEXTUAL_DRIVER: textual-serve runs the TUI over a websocket, `serve --web`)
            # cron, `ssh host nitrodeck`, CI: no TUI to draw; print what it would show, once.
            from console.cmd_lifecycle import cmd_status

            args.json = args.top_json
            args.watch = None
            args.func = cmd_status
        else:
            from console.screens.source import EarlySource

            try:
                # the first describe runs while Textual loads (the dashboard paints with enclaves listed)
                early = EarlySource(args.backend, bool(args.read_only))
            except NitrodeckError as err:
                return report_error(err, False)
            from console.first_frame import draw

            # the enclaves on screen before Textual has loaded (about half a second of CPU)
            frame = draw(early.source.peek_snapshot)
            try:
                from console.app import run_tui

                return run_tui(args, early, frame)
            finally:
                if frame is not None:
                    frame.abort()  # a no-op once Textual has the screen; else the error shows
    try:
        try:
            return int(args.func(args) or 0)
        except NitrodeckError as err:
            return report_error(err, wants_json(args))  # (its --json report goes to stdout, and may meet a closed pipe too)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `nitrodeck status --json | head`: the reader left; exit quietly like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
