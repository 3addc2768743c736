"""Printing helpers shared by every ``console/cmd_*.py``: JSON for scripts, plain tables for people.

JSON goes to stdout in nitro-cli's own style (2-space indent); progress goes to stderr so a
``--json`` stdout stays parseable. Tables are plain text (no colour) so they survive pipes and logs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

from core.text import safe_text


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and enums become plain JSON values; everything else passes through."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False)


def emit_json(obj: Any, stream: TextIO | None = None) -> None:
    """Print one JSON document (the whole stdout of a ``--json`` command)."""
    print(dumps(obj), file=stream or sys.stdout)


def progress(message: str) -> None:
    """A line for people, on stderr, so it never mixes into JSON."""
    print(safe_text(message, multiline=True), file=sys.stderr, flush=True)


def _cell(value: Any) -> str:
    """One table cell or key-value value; control characters from outside are shown escaped
    (core.text.safe_text), so an enclave or EIF name can never drive the operator's terminal."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return safe_text(",".join(str(v) for v in value)) or "-"
    return safe_text(str(value).replace("\n", " "))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], empty: str = "(none)") -> str:
    """Left-aligned columns separated by two spaces; ``empty`` when there are no rows."""
    body = [[_cell(v) for v in row] for row in rows]
    headers = [safe_text(h) for h in headers]
    if not body:
        return "  ".join(headers) + "\n" + empty
    widths = [len(h) for h in headers]
    for row in body:
        for i, text in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in body:
        lines.append("  ".join(text.ljust(widths[i]) for i, text in enumerate(row[: len(widths)])).rstrip())
    return "\n".join(lines)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key: value`` lines with the keys padded to one width."""
    items = [(safe_text(k), _cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in items)


@dataclass
class Check:
    """One line of a checklist (attestation checks, preflight): passed, what, and why."""

    name: str
    ok: bool | None  # None = not applicable / skipped
    detail: str = ""


def checklist(checks: Iterable[Check]) -> str:
    """``[ok]``/``[FAIL]``/``[--]`` lines; the words matter, not colour, so logs stay readable."""
    lines = []
    for check in checks:
        mark = "[--]  " if check.ok is None else ("[ok]  " if check.ok else "[FAIL]")
        line = f"{mark} {safe_text(check.name)}"
        if check.detail:
            line += f": {safe_text(check.detail)}"
        lines.append(line)
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    title = safe_text(title)
    return f"{title}\n{'-' * len(title)}\n{body}"
