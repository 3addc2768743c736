"""What a dialog may ask of the app that shows it: a narrow protocol, so that dialogs never import
the App class (which imports them). The app implements every method; answers come back through the
dialog's own methods (``stage``, ``action_done``, ``show_error``, ``eif_described``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.models import BuildRequest, EnclaveInfo, LaunchRequest, Measurements

if TYPE_CHECKING:
    from console.screens.base import Dialog
    from console.screens.source import Source


class DialogHost(Protocol):
    source: Source

    def start_build(self, req: BuildRequest, dialog: Dialog[Any]) -> None: ...

    def start_pin(
        self, image_name: str, measurements: Measurements, dialog: Dialog[Any] | None, eif_path: str | None = None
    ) -> None: ...

    def start_launch(self, req: LaunchRequest, dialog: Dialog[Any]) -> None: ...

    def start_test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str, dialog: Dialog[Any]) -> None: ...

    def load_eif_info(self, path: Path, dialog: Dialog[Any]) -> None: ...

    def load_docker_images(self) -> None: ...
