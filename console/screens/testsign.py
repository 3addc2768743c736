"""The test-sign dialog: send a payload to the enclave, then show every verification check, green or red."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from console.screens.base import Dialog
from console.screens.host import DialogHost, dialog_host
from core.errors import UsageError
from core.models import EnclaveInfo
from core.text import safe_text

MAX_PAYLOAD = 64 * 1024


def checklist_text(report: Any) -> Text:
    text = Text()
    ok = bool(getattr(report, "ok", False))
    text.append(" PASS " if ok else " FAIL ", style="bold black on green" if ok else "bold white on red")
    text.append(f"  scheme {getattr(report, 'scheme', '?')}\n")
    for check in getattr(report, "checks", []) or []:
        state = getattr(check, "ok", None)
        mark, style = ("[ok]  ", "bold green") if state else (("[--]  ", "dim") if state is None else ("[FAIL]", "bold red"))
        text.append(mark, style=style)
        text.append(f" {check.name}")
        if getattr(check, "detail", ""):
            text.append(f": {check.detail}", style="dim" if state else "red")
        text.append("\n")
    digest = getattr(report, "payload_sha256", None)
    if digest:
        text.append(f"payload sha256 {digest}\n", style="dim")
    return text


class TestSignDialog(Dialog[None]):
    __test__ = False  # not a pytest class, despite the name
    def __init__(self, enclave: EnclaveInfo, schemes: tuple[str, ...]) -> None:
        super().__init__()
        self.enclave = enclave
        self.schemes = schemes or ("ES384",)
        self.report: Any = None

    @property
    def host(self) -> DialogHost:
        return dialog_host(self)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog testsign-dialog"):
            yield Static(Text(f"Test-sign with {safe_text(self.enclave.label)}"), classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                with Horizontal(classes="field"):
                    yield Label("payload ", classes="field-label")
                    yield Input(compact=True, value="hello from nitrodeck", id="payload")
                with Horizontal(classes="field"):
                    yield Label("scheme ", classes="field-label")
                    yield Select[str](compact=True, options=[(s, s) for s in self.schemes], value=self.schemes[0], allow_blank=False, id="scheme")
                yield Static("", id="checklist", classes="hidden")
                yield Static("", id="dialog-error", classes="hidden")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label="Sign", id="sign", variant="primary")
                yield Button(compact=True, label="Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#payload", Input).focus()

    def start(self) -> None:
        self.clear_error()
        payload = self.query_one("#payload", Input).value.encode()
        if not payload:
            self.show_error(UsageError("the payload is empty", where="payload", hint="type any text to sign"))
            return
        if len(payload) > MAX_PAYLOAD:
            self.show_error(UsageError(f"the payload is larger than {MAX_PAYLOAD} bytes", where="payload"))
            return
        scheme = self.query_one("#scheme", Select).value
        self.query_one("#sign", Button).disabled = True
        box = self.query_one("#checklist", Static)
        box.update(Text("signing and verifying...", style="italic"))
        box.remove_class("hidden")
        self.host.start_test_sign(self.enclave, payload, str(scheme), self)

    def action_done(self, kind: str, result: Any) -> None:
        self.query_one("#sign", Button).disabled = False
        self.report = result
        box = self.query_one("#checklist", Static)
        box.update(checklist_text(result))
        self.call_after_refresh(box.scroll_visible, animate=False)

    def show_error(self, err: BaseException) -> None:
        self.query_one("#sign", Button).disabled = False
        self.query_one("#checklist", Static).add_class("hidden")
        super().show_error(err)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sign":
            self.start()
        else:
            self.dismiss(None)
