"""Numbers an operator types: finite, in range, or a typed usage error (never nan, inf or a traceback).

``float("nan")``, ``float("inf")`` and ``float("1e999")`` all parse, and then poison every
comparison and timer they reach (a nan timeout never expires, an inf one overflows ``time.monotonic()
+ timeout`` arithmetic in libraries that convert to C). Every float option goes through here.
"""

from __future__ import annotations

import math

from core.errors import NitrodeckError, UsageError

MAX_SECONDS = 7 * 24 * 3600.0  # a week: longer than any timeout, interval or age nitrodeck needs
_MAX_TEXT = 64


def parse_seconds(
    value: object,
    *,
    what: str,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    error: type[NitrodeckError] = UsageError,
    where: str | None = None,
) -> float:
    """``value`` (text or number) as finite seconds in ``[minimum, maximum]``; ``what`` names the option."""
    where = where or what
    if isinstance(value, bool):
        raise error(f"{what} must be a number of seconds", where=where)
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _MAX_TEXT:
        raise error(f"{what} is not a number of seconds (too long)", where=where)
    try:
        number = float(value) if isinstance(value, int | float) else float(text.strip())
    except (ValueError, OverflowError):
        raise error(f"{what} must be a number of seconds, got {text[:40]!r}", where=where) from None
    if not math.isfinite(number):
        raise error(f"{what} must be a finite number of seconds, got {text[:40]!r}", where=where)
    if not minimum <= number <= maximum:
        raise error(f"{what} must be between {minimum:g} and {maximum:g} seconds, got {number:g}", where=where)
    return number
