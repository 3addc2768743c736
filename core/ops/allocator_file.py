"""allocator.yaml exactly as nitro-enclaves-allocator reads it.

bootstrap/nitro-enclaves-allocator (aws-nitro-enclaves-cli) does not parse YAML: its ``parse_config``
reads the file line by line with bash. A file a YAML parser accepts can still stop the service (no
``---`` line, a blank line, a last line without its newline), so the doctor on a Nitro parent and the
emulator's allocator share this one parser instead of each guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputTooLarge, NitrodeckError

MAX_ALLOCATOR_BYTES = 4096
CONFIG_KEYS = ("memory_mib", "cpu_count", "cpu_pool")
_KEY = re.compile(r"^[-_a-zA-Z0-9]+")


class AllocatorConfigError(NitrodeckError):
    """allocator.yaml is refused by the allocator's parser (its own messages)."""

    code = "ND-ALLOCATOR-CONFIG"


@dataclass(frozen=True)
class AllocatorConfig:
    """allocator.yaml's values as the allocator script holds them: strings, checked where it checks them."""

    memory_mib: str
    cpu_count: str | None = None
    cpu_pool: str | None = None


def _bash_read(raw: str) -> str:
    """What bash's ``read line`` (no -r, default IFS) leaves of a line: outer blanks trimmed, backslashes
    taken as escapes."""
    out = re.sub(r"\\(.)", r"\1", raw).rstrip("\\")
    return out.strip(" \t")


def parse_allocator(
    text: str, where: str = "allocator.yaml", error: type[NitrodeckError] = AllocatorConfigError
) -> AllocatorConfig:
    """parse_config: line by line, nothing before ``---`` counts, ``#`` lines are skipped, a key is what
    precedes the first ``:`` and the value what follows the last one. Its messages, without the
    ``Error: `` that the script prints before them, raised as ``error``."""
    if len(text.encode()) > MAX_ALLOCATOR_BYTES:
        raise InputTooLarge(f"larger than {MAX_ALLOCATOR_BYTES} bytes", where=where)
    values: dict[str, str] = {}
    skip = True
    lines = text.split("\n")
    # `while read line` never sees a last line that has no newline
    for count, raw in enumerate(lines[:-1], start=1):
        line = _bash_read(raw)
        if re.match(r"^\s*#", line):
            continue
        if line == "---":
            skip = False
            continue
        if skip:
            continue
        m = _KEY.match(line.split(":", 1)[0])
        key = m.group(0) if m else ""
        if key not in CONFIG_KEYS:  # an empty line too: bash finds no such key ("unexpected: ")
            raise error(f"Error in {where}:{count} - unexpected: {key}", where=where)
        value = re.sub(r"^.+:", "", line, count=1)
        value = re.sub(r'\s+"?', "", value, count=1)
        value = re.sub(r'"?$', "", value, count=1)
        if not value:
            raise error(f"Error in {where}:{count} - missing value for {key}", where=where)
        values[key] = value
    if not values.get("memory_mib"):
        raise error("Config error: missing memory reservation (`memory_mib`).", where=where)
    count_v, pool_v = values.get("cpu_count"), values.get("cpu_pool")
    if not count_v and not pool_v:
        raise error("Config error: missing CPU reservation (either `cpu_count` or `cpu_pool`).", where=where)
    if count_v and pool_v:
        raise error("Config error: `cpu_count` conflicts with `cpu_pool`.", where=where)
    return AllocatorConfig(memory_mib=values["memory_mib"], cpu_count=count_v, cpu_pool=pool_v)


def allocator_number(text: str) -> int | None:
    """bash's check_if_number (``^[0-9]+$``); absurd sizes count as not numbers here."""
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else None
