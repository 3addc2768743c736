"""A failure that belongs to no open dialog: code, message, hint and error-log path."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from console.screens.base import Dialog, error_text


class ErrorDialog(Dialog[None]):
    def __init__(self, title: str, err: BaseException) -> None:
        super().__init__()
        self.title_text = title
        self.err = err

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(error_text(self.err), id="error-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label="Close", id="close", variant="error")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
