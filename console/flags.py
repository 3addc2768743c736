"""Checks of numeric command-line values that argparse's ``type=float`` lets through.

``float()`` accepts "nan", "inf" and "1e999" (which is inf). nan compares false with everything, so
``age > max_age`` never fails and a nan maximum age would accept any document; inf and huge values
make timers overflow (``timeout doesn't fit into C timeval``) or wait forever. Handlers call these
before doing anything, so the operator gets a typed ND-USAGE error naming the flag.
"""

from __future__ import annotations

import math

from core.errors import UsageError

#: upper bounds, generous but far from any overflow
MAX_AGE_SECONDS = 100 * 365 * 24 * 3600.0
MAX_TIMEOUT_SECONDS = 24 * 3600.0


def seconds(value: float | None, flag: str, *, high: float, allow_zero: bool = True) -> float | None:
    """``value`` when it is a finite number of seconds in [0, high] (or (0, high]); None passes through."""
    if value is None:
        return None
    low = "0" if allow_zero else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > high:
        raise UsageError(
            f"{flag} {value!r} is not a number of seconds from {low} to {high:g}",
            where=flag,
            hint=f"give {flag} a finite number of seconds, e.g. {flag} 300",
        )
    return value
