"""The dashboard's widgets, and the rule they share for repainting text.

A refresh (every safety poll, every change) hands each pane its text again, and most of the time
nothing in it changed. Textual repaints a Static on every ``update`` and, by default, lays out the
whole screen too: ~50 ms of CPU per refresh, most of the idle dashboard's cost. :func:`show_text`
skips text that is already shown and lays out only when the text's height may have changed.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

_SHOWN = "_nitrodeck_shown"


def text_key(text: Text) -> tuple[object, ...]:
    # Text.__eq__ compares the characters and spans only, not the base style
    return (text.plain, str(text.style), tuple(text.spans), text.justify, text.overflow, text.no_wrap, text.end)


def _height(text: Text, width: int) -> int | None:
    """Lines the text takes at ``width``, or None when a line would wrap (then only a layout knows)."""
    lines = text.plain.split("\n")
    if width <= 0 or any(cell_len(line) > width for line in lines):
        return None
    return len(lines)


def show_text(static: Static, text: Text, *, fixed_height: bool = False) -> bool:
    """Show ``text`` in ``static`` unless it shows it already; True when it repainted.

    ``fixed_height``: the widget's height does not follow its text (the one-line header), so no
    layout is needed. Otherwise the screen is laid out only when the number of lines may change."""
    key = text_key(text)
    shown: tuple[tuple[object, ...], Text] | None = getattr(static, _SHOWN, None)
    if shown is not None and shown[0] == key:
        return False
    layout = True
    if fixed_height:
        layout = False
    elif shown is not None and static.size.width:
        width = static.content_region.width
        before, after = _height(shown[1], width), _height(text, width)
        layout = before is None or before != after
    setattr(static, _SHOWN, (key, text))
    static.update(text, layout=layout)
    return True
