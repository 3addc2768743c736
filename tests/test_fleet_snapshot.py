"""The fleet view's snapshot (frozen hosts: one matching, one mismatching with a recent exit, one
unreachable; the first host's enclaves shown), at 80x24 and 160x48."""

from __future__ import annotations

import pytest

from console.agent.fleet_frozen import frozen_fleet_app
from console.screenshots import SIZES


async def _show_first_host(pilot) -> None:  # type: ignore[no-untyped-def]
    for _ in range(50):
        await pilot.pause(0.05)
        if pilot.app.reports:
            break
    await pilot.press("enter")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_fleet_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(frozen_fleet_app(), terminal_size=size, run_before=_show_first_host)
