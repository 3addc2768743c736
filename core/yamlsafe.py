"""YAML for configuration files, bounded before anything is built.

``yaml.safe_load`` builds whatever the text describes: ten nested aliases of ten items each (a
"billion laughs") expand to 10^10 references from a few hundred bytes, and deep nesting recurses
until Python gives up. Configuration files never need aliases, so they are refused outright, and
nesting and node counts are limited while composing, before any Python object exists. Callers still
bound the byte size of the text they read.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 32
MAX_NODES = 20_000


class YamlRefused(ValueError):
    """The text uses something configuration YAML never needs (aliases) or is too deep or large.

    A ``ValueError`` (not a ``yaml.YAMLError``) so no caller mistakes it for a syntax problem it can
    describe with a line snippet; :func:`load_yaml` says where.
    """


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str | bytes, max_depth: int, max_nodes: int) -> None:
        super().__init__(stream)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlRefused(f"YAML aliases (*name) are not accepted (line {mark.line + 1})")
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise YamlRefused(f"more than {self._max_nodes} YAML nodes")
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark
                raise YamlRefused(f"nested deeper than {self._max_depth} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str | bytes, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Like ``yaml.safe_load`` for one document, but raises :class:`YamlRefused` for aliases, deep
    nesting or too many nodes (and ``yaml.YAMLError`` for syntax, as before)."""
    loader = _BoundedLoader(text, max_depth, max_nodes)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YamlRefused("nested too deeply") from None
    finally:
        loader.dispose()


def short(value: Any, limit: int = 40) -> str:
    """A parsed value for an error message: its repr, cut to ``limit`` characters (never the whole
    value: a parsed list can be megabytes when formatted)."""
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
