"""Checkbox and radio button whose state shows as a glyph, not only as a colour.

Textual draws the same ``X`` / ``●`` for on and off and changes only its colour, which NO_COLOR and
16-colour terminals lose. These draw ``X`` / ``●`` when on and a blank when off.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Checkbox, RadioButton


class GlyphCheckbox(Checkbox):
    # In a dialog Enter moves to the next field (space toggles), as it does from every input
    # (the dialog's priority binding does it; this keeps Enter from toggling elsewhere too).
    BINDINGS = [Binding("enter", "screen.focus_next", "Next field", show=False)]

    @property  # type: ignore[override]
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's own name, read by ToggleButton._button
        return "X" if self.value else " "


class GlyphRadioButton(RadioButton):
    @property  # type: ignore[override]
    def BUTTON_INNER(self) -> str:  # noqa: N802
        return "\u25cf" if self.value else " "
