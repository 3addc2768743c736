"""`y`: copy the selected enclave's ID, its PCR0, or all its PCRs (lazygit's yank menu).

The App copies with Textual's ``copy_to_clipboard`` (OSC 52: the terminal sets its clipboard, which
works over SSH too) and notifies what was copied.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from console.screens.base import Dialog
from core.models import EnclaveInfo

#: (choice, key, label)
CHOICES = (("id", "i", "enclave ID"), ("pcr0", "0", "PCR0"), ("pcrs", "a", "all PCRs, as PCRn=hex lines"))


def yank_text(enclave: EnclaveInfo, what: str) -> tuple[str | None, str]:
    """The text to copy and how the notification names it; None when there is nothing to copy."""
    if what == "id":
        return enclave.enclave_id, f"the enclave ID {enclave.enclave_id}"
    if enclave.measurements is None:
        return None, ""
    pcrs = enclave.measurements.pcrs()
    if what == "pcr0":
        return pcrs[0], "PCR0"
    return "\n".join(f"PCR{n}={value}" for n, value in sorted(pcrs.items())), \
        "PCR" + ", PCR".join(str(n) for n in sorted(pcrs))


class YankMenu(Dialog[str | None]):
    BINDINGS = [Binding(key, f"pick('{choice}')", label, show=False) for choice, key, label in CHOICES]

    def __init__(self, enclave: EnclaveInfo) -> None:
        super().__init__()
        self.enclave = enclave

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog yank-dialog"):
            yield Static(f"Copy from {self.enclave.label}", classes="dialog-title")
            yield OptionList(*(Option(f"{key}  {label}", id=choice) for choice, key, label in CHOICES), id="yank-choices")
            yield Static("enter or the key copies  -  esc closes", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def action_pick(self, choice: str) -> None:
        self.dismiss(choice)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
