"""What every dialog shares: escape closes it, and a typed error box (code, message, hint, log path)."""

from __future__ import annotations

from typing import Any, TypeVar

from rich.text import Text
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

from core.errors import NitrodeckError

R = TypeVar("R")


def error_text(err: BaseException) -> Text:
    """The four things an operator needs: code, message, hint, where the full log is."""
    text = Text()
    code = getattr(err, "code", None) or type(err).__name__
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    text.append(f" {code} ", style="bold white on red")
    text.append(f" {message}\n")
    where = getattr(err, "where", None)
    if where:
        text.append("where: ", style="bold")
        text.append(f"{where}\n")
    hint = getattr(err, "hint", None)
    if hint:
        text.append("hint: ", style="bold")
        text.append(f"{hint}\n")
    log_path = getattr(err, "log_path", None)
    if log_path:
        text.append("error log: ", style="bold")
        text.append(f"{log_path}\n")
    if not isinstance(err, NitrodeckError):
        text.append("(unexpected error; the full traceback is in the nitrodeck log)", style="dim")
    text.rstrip()
    return text


class Dialog(ModalScreen[R]):
    BINDINGS = [Binding("escape", "close", "Close", id="dialog-close")]

    def action_close(self) -> None:
        self.dismiss(None)

    def show_error(self, err: BaseException) -> None:
        """Show a failure inside the dialog, in its #dialog-error box."""
        box = self.query_one("#dialog-error", Static)
        box.update(error_text(err))
        box.remove_class("hidden")
        self.call_after_refresh(box.scroll_visible, animate=False)

    def clear_error(self) -> None:
        box = self.query_one("#dialog-error", Static)
        box.update("")
        box.add_class("hidden")

    # The App forwards worker outcomes for this dialog here.
    def action_done(self, kind: str, result: Any) -> None:  # pragma: no cover - overridden
        pass

    def stage(self, stage: str) -> None:  # pragma: no cover - overridden where useful
        pass
