"""The fleet view's snapshots (frozen hosts: one matching, one mismatching with a recent exit, one
unreachable), at 80x24 and 160x48: the table with the first host's enclaves below it, and that host's
dashboard opened with Enter (read through its frozen agent)."""

from __future__ import annotations

import pytest

from console.agent.fleet_frozen import frozen_fleet_app, open_first_host, settle_fleet
from console.screenshots import SIZES


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_fleet_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(frozen_fleet_app(), terminal_size=size, run_before=settle_fleet)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_fleet_dashboard_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(frozen_fleet_app(), terminal_size=size, run_before=open_first_host)
