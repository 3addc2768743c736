"""Usage errors in clap's layout: nitro-cli 1.5.0 parses its command line with clap ~4.5 (Cargo.toml).

nitro-emu keeps argparse as its parser and renders argparse's complaints the way clap prints them:

    error: <what>

    Usage: nitro-cli <subcommand> ...

    For more information, try '--help'.

on stderr, exit status 2, nothing on stdout, no ``[ Exx ]`` block. The ``Usage:`` line is an
approximation: clap derives it from its whole argument graph (docs/emulator.md lists this).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

FOOTER = "For more information, try '--help'."
EXIT_USAGE = 2


def placeholder(parser: argparse.ArgumentParser, option: str) -> str:
    """clap's name for an argument: ``--memory <memory>``, ``--cpu-ids <cpu-ids>...``, ``--all``."""
    for action in parser._actions:
        if option in action.option_strings:
            if action.nargs == 0:
                return option
            name = action.metavar or option.lstrip("-")
            return f"{option} <{name}>" + ("..." if action.nargs in ("+", "*") else "")
    return option


def usage_line(parser: argparse.ArgumentParser) -> str:
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        return f"{parser.prog} [COMMAND]"
    required = [
        placeholder(parser, a.option_strings[0]) for a in parser._actions if a.required and a.option_strings
    ]
    optional = any(not a.required and a.option_strings and a.dest not in ("help", "version") for a in parser._actions)
    return " ".join([parser.prog, *(["[OPTIONS]"] if optional else []), *required])


def _missing_value(parser: argparse.ArgumentParser, option: str, argv: Sequence[str]) -> str:
    """clap's words for an option left without a value: the token after it starts with '-', so clap
    parsed it as a flag (parser.rs parse_short_arg / parse_long_arg). A flag it knows ends the option
    ("a value is required"); one it does not know is named: ``unexpected argument '-1' found`` (a short
    flag is named by its first character)."""
    required = f"a value is required for '{placeholder(parser, option)}' but none was supplied"
    for i, token in enumerate(argv[:-1]):
        following = argv[i + 1]
        if token != option or not following.startswith("-") or following == "-":
            continue
        if following.startswith("--"):
            name = following.split("=", 1)[0]
            known = name == "--" or any(name in a.option_strings for a in parser._actions)
        else:
            name = following[:2]
            known = any(name in a.option_strings for a in parser._actions)
        return required if known else f"unexpected argument '{name}' found"
    return required


def clap_message(parser: argparse.ArgumentParser, message: str, argv: Sequence[str] = ()) -> str:
    """argparse's error text -> clap's wording for the same failure."""
    m = re.match(r"the following arguments are required: (.+)$", message)
    if m:
        names = [placeholder(parser, n.strip()) for n in m.group(1).split(",")]
        return "the following required arguments were not provided:\n" + "".join(f"  {n}\n" for n in names).rstrip("\n")
    m = re.match(r"one of the arguments (.+) is required$", message)
    if m:
        names = [placeholder(parser, n) for n in m.group(1).split()]
        return "the following required arguments were not provided:\n  <" + "|".join(names) + ">"
    m = re.match(r"argument (\S+?)(?:/\S+)?: not allowed with argument (\S+?)(?:/\S+)?$", message)
    if m:
        return f"the argument '{placeholder(parser, m.group(2))}' cannot be used with '{placeholder(parser, m.group(1))}'"
    m = re.match(r"unrecognized arguments: (\S+)", message)
    if m:
        return f"unexpected argument '{m.group(1)}' found"
    m = re.match(r"argument \w+: invalid choice: '([^']*)'", message)
    if m:
        return f"unrecognized subcommand '{m.group(1)}'"
    m = re.match(r"argument (\S+?)(?:/\S+)?: expected (?:one argument|at least one argument)$", message)
    if m:
        return _missing_value(parser, m.group(1), argv)
    return message


def render(parser: argparse.ArgumentParser, message: str, argv: Sequence[str] = ()) -> str:
    return f"error: {clap_message(parser, message, argv)}\n\nUsage: {usage_line(parser)}\n\n{FOOTER}\n"


#: lib.rs create_app!: conflicts_with / conflicts_with_all, per subcommand (clap checks both directions)
CONFLICTS: dict[str, frozenset[frozenset[str]]] = {
    "run-enclave": frozenset(
        frozenset(pair)
        for pair in (
            ("--cpu-ids", "--cpu-count"), ("--cpu-ids", "--config"), ("--cpu-count", "--config"),
            ("--memory", "--config"), ("--eif-path", "--config"), ("--enclave-cid", "--config"),
            ("--debug-mode", "--config"), ("--enclave-name", "--config"),
        )
    ),
    "terminate-enclave": frozenset(
        frozenset(pair) for pair in (("--enclave-id", "--all"), ("--enclave-id", "--enclave-name"), ("--all", "--enclave-name"))
    ),
    "console": frozenset({frozenset(("--enclave-id", "--enclave-name"))}),
    "pcr": frozenset({frozenset(("--signing-certificate", "--input"))}),
}


def clap_precheck(parser: argparse.ArgumentParser, command: str, args: Sequence[str]) -> str | None:
    """The usage errors clap words differently from argparse, for a command line clap would otherwise
    parse: an argument given twice ("cannot be used multiple times": every nitro-cli argument is
    ArgAction::Set or SetTrue), then conflicts (validator.rs: the first argument given that conflicts
    with others, those others in the order given). None: leave the line to argparse, which also
    reports what clap finds first (an unknown argument, a missing value)."""
    takes_value = {o: a.nargs != 0 for a in parser._actions for o in a.option_strings}
    # the emulator's own repeatable options (build-enclave --env) are no clap arguments
    repeatable = {o for a in parser._actions if isinstance(a, argparse._AppendAction) for o in a.option_strings}
    seen: list[str] = []
    pending = False  # the last option still waits for its value
    for token in args:
        if token == "--":
            return None
        if not token.startswith("--"):
            pending = False
            continue
        name, attached = token.split("=", 1)[0], "=" in token
        if name not in takes_value or pending:
            return None  # unknown, or a value missing: argparse's error is clap's
        if name in seen and name not in repeatable:
            return f"the argument '{placeholder(parser, name)}' cannot be used multiple times"
        if name not in seen:
            seen.append(name)
        pending = takes_value[name] and not attached
    pairs = CONFLICTS.get(command, frozenset())
    for name in seen:
        others = [o for o in seen if o != name and frozenset((name, o)) in pairs]
        if len(others) == 1:
            return f"the argument '{placeholder(parser, name)}' cannot be used with '{placeholder(parser, others[0])}'"
        if others:
            listed = "".join(f"\n  {placeholder(parser, o)}" for o in others)
            return f"the argument '{placeholder(parser, name)}' cannot be used with:{listed}"
    return None
