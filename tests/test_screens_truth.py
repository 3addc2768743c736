"""The frozen world's scenes show what nitrodeck really produces: each scene's error names the values
the scene typed, in the emulator's own (nitro-cli's) words, and the test-sign scene is core's report."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from console.screens.frozen import EXPECTED, FROZEN_NOW, PAYMENTS
from console.screens.frozen_attest import DEFAULT_PAYLOAD, NONCE, SCHEME
from console.screenshots import SCENES, scene_app
from core.errors import NitroCliError
from emulator.errors import detail

BY_NAME = {scene.name: scene for scene in SCENES}


async def _run(name: str):  # type: ignore[no-untyped-def]
    scene = BY_NAME[name]
    app = scene_app(scene)
    async with app.run_test(size=(160, 48)) as pilot:
        await scene.setup(pilot)
        screen = app.screen
        error = screen.query("#dialog-error")
        text = str(error.first(Static).render()) if error else ""
        # everything the top screen shows, read while it is mounted
        text += "\n" + "\n".join(str(w.render()) for w in screen.query(Static))
        return app, screen, text


async def test_launch_failed_names_the_memory_the_scene_asked_for() -> None:
    _app, _dialog, text = await _run("launch-failed")
    # the scene types 512 MiB: the error must be about 512, not some other number
    assert "512" in text and "4096" not in text
    assert detail("E27", ["memory", "512"]).splitlines()[0] in text


async def test_launch_invalid_names_the_memory_the_scene_typed() -> None:
    _app, _dialog, text = await _run("launch-invalid")
    assert "8192" in text


async def test_action_failed_is_the_emulators_e11() -> None:
    _app, _screen, shown = await _run("action-failed")
    assert "E11" in shown and detail("E11", [])[:60] in shown.replace("\n", " ")


async def test_test_sign_scene_is_cores_report() -> None:
    from core.ops.testsign import sign_report

    _app, dialog, _ = await _run("test-sign")
    shown = dialog.report  # type: ignore[attr-defined]
    import base64

    from console.screens.frozen_attest import frozen_trust
    from console.screens.frozen_evidence import EVIDENCE

    answer = EVIDENCE["enclaves"][PAYMENTS.enclave_id]
    again = sign_report(
        PAYMENTS, SCHEME, DEFAULT_PAYLOAD, NONCE, base64.b64decode(answer["signature"]),
        base64.b64decode(answer["public_key"]), base64.b64decode(answer["document"]),
        EXPECTED[PAYMENTS.enclave_id], via_label=f"vsock {PAYMENTS.cid}:5005", trust=frozen_trust(),
        at=FROZEN_NOW,
    )
    assert [(c.name, c.ok, c.detail) for c in shown.checks] == [(c.name, c.ok, c.detail) for c in again.checks]
    assert shown.ok and {c.name for c in shown.checks} >= {"chain", "validity", "pcr0", "nonce", "age"}


def test_frozen_evidence_fails_where_it_should() -> None:
    """The stored evidence is real: another payload does not verify, and an hour past the chain's
    expiry the same document is refused by core."""
    import datetime as dt

    from console.screens.frozen_attest import report

    other = report(PAYMENTS, b"something else", SCHEME, EXPECTED[PAYMENTS.enclave_id], FROZEN_NOW)
    assert not other.ok and next(c for c in other.checks if c.name == "payload signature").ok is False
    late = report(PAYMENTS, DEFAULT_PAYLOAD, SCHEME, EXPECTED[PAYMENTS.enclave_id],
                  FROZEN_NOW + dt.timedelta(hours=4))
    assert not late.ok and next(c for c in late.checks if c.name == "validity").ok is False


def test_frozen_launch_error_is_typed_from_the_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from console.screens.frozen import FrozenSource
    from core.models import LaunchRequest

    with pytest.raises(NitroCliError) as caught:
        FrozenSource().launch(LaunchRequest(eif_path=str(tmp_path / "x.eif"), memory_mib=777, cpu_count=2))
    assert caught.value.code == "E27" and "`memory` is 777 MB" in caught.value.message
