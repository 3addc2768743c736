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
