"""What every dialog shares: escape closes it, a typed error box (code, message, hint, log path) that
clears as soon as the field it is about changes, Enter that moves to the next field (and submits only
from the last one), and fields derived from another that follow it until the operator edits them."""

from __future__ import annotations

import time
from typing import Any, TypeVar

from rich.text import Text
from textual import on
from textual.actions import SkipAction
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, RadioSet, Select, Static

from core.errors import NitrodeckError
from core.text import safe_text

R = TypeVar("R")
#: how long a focus move asked for by Enter counts as "where the cursor is" before it shows
PENDING_FOCUS_S = 1.0


def error_text(err: BaseException) -> Text:
    """The four things an operator needs: code, message, hint, where the full log is."""
    text = Text()
    code = getattr(err, "code", None) or type(err).__name__
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    text.append(f" {code} ", style="bold white on red")
    text.append(f" {safe_text(message, multiline=True)}\n")
    detail = getattr(err, "detail", None)
    if detail:
        text.append("detail: ", style="bold")
        text.append(f"{safe_text(str(detail), multiline=True)}\n")
    where = getattr(err, "where", None)
    if where:
        text.append("where: ", style="bold")
        text.append(f"{safe_text(where)}\n")
    hint = getattr(err, "hint", None)
    if hint:
        text.append("hint: ", style="bold")
        text.append(f"{safe_text(hint, multiline=True)}\n")
    log_path = getattr(err, "log_path", None)
    if log_path:
        text.append("error log: ", style="bold")
        text.append(f"{log_path}\n")
    if not isinstance(err, NitrodeckError):
        text.append("(unexpected error; the full traceback is in the nitrodeck log)", style="dim")
    text.rstrip()
    return text


class Dialog(ModalScreen[R]):
    BINDINGS = [
        Binding("escape", "close", "Close", id="dialog-close"),
        Binding("enter", "enter_field", "Next field", show=False, priority=True),
    ]
    #: the id of the last field: Enter there submits, Enter in any other Input moves to the next field
    LAST_FIELD: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._error_where: str | None = None
        self._values_at_error: dict[str, object] = {}
        self._pending_focus: Any = None
        self._pending_at = 0.0
        #: every value a derived field was given by the dialog (not typed): field id -> values
        self._derived: dict[str, set[str]] = {}
        self._edited: set[str] = set()

    def action_close(self) -> None:
        self.dismiss(None)

    def show_error(self, err: BaseException) -> None:
        """Show a failure inside the dialog, in its #dialog-error box."""
        box = self.query_one("#dialog-error", Static)
        box.update(error_text(err))
        box.remove_class("hidden")
        self._error_where = getattr(err, "where", None)
        # what the fields held when the message appeared: a change event still queued from before
        # (same value) must not clear it
        self._values_at_error = self._field_values()
        self.call_after_refresh(box.scroll_visible, animate=False)

    def clear_error(self) -> None:
        box = self.query_one("#dialog-error", Static)
        box.update("")
        box.add_class("hidden")
        self._error_where = None

    # -- Enter moves on; derived fields; the error clears when its field changes

    def submit(self) -> None:  # pragma: no cover - overridden by dialogs with fields
        pass

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._enter_on(event.input)

    def action_enter_field(self) -> None:
        """Enter, read when the key arrives (a priority binding): a queued Submitted would be handled
        after the next keys of a fast typist were already delivered to the old field."""
        # focus moves a moment after focus() is called: a fast second Enter counts from where the
        # first one sent it, not from the field that still shows the cursor
        pending = self._pending_focus
        fresh = pending is not None and pending.is_attached and time.monotonic() - self._pending_at < PENDING_FOCUS_S
        focused = pending if fresh else self.focused
        if not isinstance(focused, Input | Checkbox) or self.LAST_FIELD is None:
            raise SkipAction()  # buttons, selects, radio sets, dialogs without fields: their own Enter
        self._enter_on(focused)

    def _enter_on(self, field: Input | Checkbox) -> None:
        if self.LAST_FIELD is None or field.id == self.LAST_FIELD:
            self.submit()
            return
        chain = self.focus_chain
        if field in chain:
            target = chain[(chain.index(field) + 1) % len(chain)]
            self._pending_focus = target
            self._pending_at = time.monotonic()
            target.focus()
        else:
            self.focus_next()

    def on_descendant_focus(self, event: Any) -> None:
        if event.widget is self._pending_focus:
            self._pending_focus = None  # the focus asked for has arrived
    def derive(self, field_id: str, value: str) -> None:
        """Set a field that follows another (a name from the chosen EIF), unless the operator edited it."""
        if field_id in self._edited:
            return
        box = self.query_one(f"#{field_id}", Input)
        self._derived.setdefault(field_id, {box.value}).add(value)
        box.value = value

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        field = event.input.id or ""
        if field in self._derived and event.value not in self._derived[field]:
            self._edited.add(field)  # typed by the operator: it stops following
        self._field_changed(field)

    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(RadioSet.Changed)
    def _choice_changed(self, event: Select.Changed | Checkbox.Changed | RadioSet.Changed) -> None:
        widget = getattr(event, "select", None) or getattr(event, "checkbox", None) or getattr(event, "radio_set", None)
        self._field_changed(getattr(widget, "id", None) or "")

    def _field_values(self) -> dict[str, object]:
        return {w.id: getattr(w, "value", getattr(w, "pressed_index", None))
                for w in self.query("Input, Select, Checkbox, RadioSet") if w.id}

    def _field_changed(self, field: str) -> None:
        if self._error_where is None:
            return
        if self._field_values().get(field) == self._values_at_error.get(field, object()):
            return  # not a change since the message appeared
        # the error names its field (where="memory"); an error about something else (a tool failure,
        # "signing" for two fields) clears on any change
        names_a_field = bool(self.query(f"#{self._error_where}")) if self._error_where.isidentifier() else False
        if field == self._error_where or not names_a_field:
            self.clear_error()

    # The App forwards worker outcomes for this dialog here.
    def action_done(self, kind: str, result: Any) -> None:  # pragma: no cover - overridden
        pass

    def stage(self, stage: str) -> None:  # pragma: no cover - overridden where useful
        pass
