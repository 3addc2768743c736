"""What a dialog may ask of the dashboard that opened it: a narrow protocol, so that dialogs never import
the dashboard (console/app.py, which imports them). The dashboard implements every method; answers come
back through the dialog's own methods (``stage``, ``action_done``, ``show_error``, ``eif_described``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from core.models import BuildRequest, EnclaveInfo, LaunchRequest, Measurements

if TYPE_CHECKING:
    from textual.screen import Screen

    from console.screens.base import Dialog
    from console.screens.source import Source


class DialogHost(Protocol):
    source: Source

    def start_build(self, req: BuildRequest, dialog: Dialog[Any]) -> None: ...

    def start_pin(
        self, image_name: str | None, measurements: Measurements, dialog: Dialog[Any] | None,
        eif_path: str | None = None,
    ) -> None: ...

    def start_launch(self, req: LaunchRequest, dialog: Dialog[Any]) -> None: ...

    def start_test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str, dialog: Dialog[Any]) -> None: ...

    def load_eif_info(self, path: Path, dialog: Dialog[Any]) -> None: ...

    def load_docker_images(self) -> None: ...


def dialog_host(dialog: Screen[Any]) -> DialogHost:
    """The dashboard under ``dialog``: the topmost screen below it that serves dialogs (the app's own
    dashboard, or the remote host's dashboard the fleet opened)."""
    stack = dialog.app.screen_stack
    below = stack[: stack.index(dialog)] if dialog in stack else stack
    for screen in reversed(below):
        if hasattr(screen, "start_build"):
            return cast("DialogHost", screen)
    raise LookupError("this dialog was not opened from a dashboard")
