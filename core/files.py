"""Reading operator-named files: whole, bounded, and with a typed error that names the file."""

from __future__ import annotations

from pathlib import Path

from core.errors import InputTooLarge, UsageError


def read_limited(path: str | Path, limit: int, where: str | None = None) -> bytes:
    """The whole file, refusing (typed) anything unreadable or over ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so an oversized file never costs more than that.
    ``where`` names the flag or field the path came from (default: the path itself).
    """
    path = Path(path).expanduser()
    where = where or str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", where=where) from exc
    if len(data) > limit:
        raise InputTooLarge(f"{path} is larger than {limit} bytes", where=where)
    return data
