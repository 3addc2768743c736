"""Snapshots of every screen and dialog at 80x24 and 160x48, from the frozen world (deterministic:
fixed enclaves, clock, sparkline samples). Update with `pytest --snapshot-update` after a deliberate
UI change, look at the diff report, and commit tests/__snapshots__/."""

from __future__ import annotations

import pytest

from console.screenshots import SCENES, SIZES, Scene, scene_app


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_screen(snap_compare, scene: Scene, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(scene_app(scene), terminal_size=size, run_before=scene.setup)
