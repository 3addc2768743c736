"""Strings from outside (enclave names, an EIF's ImageName/ImageVersion/metadata, console lines,
error messages that quote them) made safe to show on a terminal.

Every output but JSON goes through :func:`safe_text`: a control character could otherwise retitle,
clear or rewrite the operator's terminal (ESC sequences, OSC titles, a carriage return that hides
the start of a line), and bidirectional overrides could make a name read as another. Each such
character is shown as a visible escape (``\\x1b``, ``\\u202e``) instead, so nothing is lost and
nothing is interpreted. JSON keeps the raw value (its encoder escapes control characters itself).
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or hide text
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_UNSAFE_KEEP_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: Any, *, multiline: bool = False) -> str:
    """``str(value)`` with every control or text-reordering character shown as an escape.

    ``multiline`` keeps ``\\n`` (messages with a hint line); everything else, tabs and carriage
    returns included, is escaped.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text  # the common case, a fifth of the regex's cost (a console line at a time adds up)
    pattern = _UNSAFE_KEEP_NEWLINE if multiline else _UNSAFE
    return pattern.sub(_escape, text)


def is_safe(value: str) -> bool:
    """True when :func:`safe_text` would leave ``value`` unchanged (single-line)."""
    return _UNSAFE.search(value) is None
