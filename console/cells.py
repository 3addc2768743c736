"""What the enclave table's cells say, without Textual: the dashboard's table and the first frame
drawn before Textual loads (console/first_frame.py) share these."""

from __future__ import annotations


def short_id(enclave_id: str) -> str:
    return "…" + enclave_id[-8:] if len(enclave_id) > 9 else enclave_id


def age_text(seconds: float | None) -> str:
    """Uptime in whole minutes, the two largest units: <1m, 45m, 26h5m -> 1d2h, 3d4h.

    Minutes, not seconds: the table redraws an age only when its text changes, and redrawing the
    table costs ~15 ms of CPU; seconds would mean a redraw every tick for most of the idle dashboard's
    cost (issue 13). The detail pane shows the start to the second."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return "<1m"
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m"


__all__ = ["age_text", "short_id"]
