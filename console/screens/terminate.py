"""Terminate confirmations: y/n for one enclave; typing `all` for every enclave."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from console.screens.base import Dialog
from core.models import EnclaveInfo
from core.text import safe_text


class Confirm(Dialog[bool]):
    """y / n. Cancel has the focus, so a stray enter never confirms."""

    BINDINGS = [
        Binding("escape,n", "close", "Cancel", id="dialog-close"),
        Binding("y", "confirm", "Confirm", id="confirm"),
    ]

    def __init__(self, title: str, body: str, yes_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm-dialog"):
            # Text, not markup: the body quotes names from outside (escaped by core.text.safe_text)
            yield Static(Text(safe_text(self.title_text)), classes="dialog-title")
            yield Static(Text(safe_text(self.body, multiline=True)), id="confirm-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label=f"{self.yes_label} (y)", id="confirm", variant="error")
                yield Button(compact=True, label="Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_close(self) -> None:
        self.dismiss(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")


class ConfirmTerminate(Confirm):
    def __init__(self, enclave: EnclaveInfo) -> None:
        e = enclave
        super().__init__(
            "Terminate enclave?",
            f"{e.label}\n{e.enclave_id}\nCID {e.cid}, CPUs {','.join(map(str, e.cpu_ids))}, {e.memory_mib} MiB\n\n"
            "Its memory and CPUs return to the pool. This cannot be undone.",
            "Terminate",
        )
        self.enclave = enclave


class ConfirmTerminateAll(Dialog[bool]):
    WORD = "all"

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm-dialog"):
            yield Static("Terminate ALL enclaves?", classes="dialog-title")
            yield Static(
                f"{self.count} enclave(s) will be terminated. Type `{self.WORD}` and press enter to confirm.",
                id="confirm-body",
            )
            yield Input(compact=True, placeholder=f"type {self.WORD}", id="confirm-word")
            yield Static("", id="dialog-error", classes="hidden")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label="Terminate all", id="confirm", variant="error")
                yield Button(compact=True, label="Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#confirm-word", Input).focus()

    def _try(self) -> None:
        if self.query_one("#confirm-word", Input).value.strip() == self.WORD:
            self.dismiss(True)
        else:
            box = self.query_one("#dialog-error", Static)
            box.update(f"type `{self.WORD}` exactly to confirm, or press esc")
            box.remove_class("hidden")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._try()

    def action_close(self) -> None:
        self.dismiss(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self._try()
        else:
            self.dismiss(False)
