"""What the enclave table's cells say, without Textual: the dashboard's table and the first frame
drawn before Textual loads (console/first_frame.py) share these."""

from __future__ import annotations


def short_id(enclave_id: str) -> str:
    return "…" + enclave_id[-8:] if len(enclave_id) > 9 else enclave_id


def age_text(seconds: float | None) -> str:
    """Uptime as k9s shows AGE: the two largest units (3d4h, 26h5m -> 1d2h, 4m12s, 45s)."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


__all__ = ["age_text", "short_id"]
