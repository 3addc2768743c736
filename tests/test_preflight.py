"""Launch pre-checks (core/ops/preflight.py) at their edges: they refuse only what nitro-cli would refuse,
and name the cause nitro-cli's own code hides (issue 10 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.models import LaunchRequest
from core.ops.lifecycle import Lifecycle
from core.ops.preflight import LaunchConflict, check_launch

MIB = 1024 * 1024


@pytest.mark.parametrize(("eif_bytes", "least"), [
    (100 * MIB, 400),             # exactly 4x: accepted at 400
    (100 * MIB + MIB // 5, 401),  # 100.2 MiB: 400.8 MiB, so 401 is enough (not 4 x 101 = 404)
    (16 * MIB + 1, 65),
])
def test_the_4x_rule_is_nitro_clis(eif_bytes: int, least: int) -> None:
    """resource_manager.rs: refused exactly when 4 x the EIF's bytes exceed the memory's bytes."""
    check_launch(LaunchRequest("x.eif", least, cpu_count=2), [], None, eif_bytes)
    with pytest.raises(LaunchConflict) as refused:
        check_launch(LaunchRequest("x.eif", least - 1, cpu_count=2), [], None, eif_bytes)
    assert refused.value.cli_code == "E26" and f"needs at least {least} MiB" in refused.value.message
    assert refused.value.where == "launch --memory" and str(least) in (refused.value.hint or "")


@pytest.mark.parametrize(("content", "defect"), [
    (b"\x00" * 64, "bad magic"),
    (b".eif" + b"\x00" * 4, "EIF"),  # the right magic, then nothing
])
def test_an_eif_that_does_not_parse_is_refused_with_the_error_logs_defect(
    nd_home: Path, tmp_path: Path, content: bytes, defect: str
) -> None:
    eif = tmp_path / "broken.eif"
    eif.write_bytes(content)
    with pytest.raises(LaunchConflict) as refused:
        Lifecycle().launch(LaunchRequest(str(eif), 64, cpu_count=2, name="broken"))
    message = refused.value.message
    assert refused.value.cli_code == "E35" and message.startswith(f"the EIF {eif} does not parse: ")
    assert defect in message and "hugepages" not in message  # E35's stock text blames hugepages
    [failed] = Lifecycle().journal.read()
    assert failed.event == "launch-failed" and failed.name == "broken" and defect in failed.get("message")
