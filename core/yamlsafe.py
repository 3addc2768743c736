"""YAML for configuration files, bounded before anything is built.

``yaml.safe_load`` builds whatever the text describes: ten nested aliases of ten items each (a
"billion laughs") expand to 10^10 references from a few hundred bytes, and deep nesting recurses
until Python gives up. Configuration files never need aliases, so they are refused outright, and
nesting and node counts are limited while composing, before any Python object exists. Callers still
bound the byte size of the text they read.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

MAX_DEPTH = 32
MAX_NODES = 20_000


class YamlRefused(ValueError):
    """The text uses something configuration YAML never needs (aliases) or is too deep or large.

    A ``ValueError`` (not a ``yaml.YAMLError``) so no caller mistakes it for a syntax problem it can
    describe with a line snippet; :func:`load_yaml` says where.
    """


def yaml_error() -> type[Exception]:
    """``yaml.YAMLError``, for ``except yaml_error() as exc:`` (evaluated only when something was
    raised, so a caller that never meets bad YAML never imports PyYAML)."""
    import yaml

    return yaml.YAMLError


@cache
def _bounded_loader() -> type:
    import yaml  # ~10 ms of regular expressions: only for documents the flat reader leaves to it

    class BoundedLoader(yaml.SafeLoader):
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

    return BoundedLoader


# --- flat documents without PyYAML -------------------------------------------------------------------
#
# The emulator's instance.yaml (written by yaml.safe_dump) is read by every `status`, and importing
# PyYAML costs more than reading it. A flat document, ``key: scalar`` lines and ``key:`` followed by a
# block list of scalars, is read here when every scalar is one whose YAML 1.1 meaning (PyYAML's
# resolvers) is beyond doubt; anything else (quotes, flow collections, nesting, comments after values,
# other spellings of numbers and booleans, digits-first strings) goes to PyYAML, whose answer this one
# equals wherever it answers (tests/test_yamlsafe_flat.py).

_FLAT_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?")
_FLAT_ITEM = re.compile(r"( *)- (.*)")
_FLAT_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
# a letter, "_" or "/" first: never an int, float, timestamp, merge or value key in YAML 1.1
_FLAT_STR = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@+-]*")
_FLAT_WORDS: dict[str, Any] = {
    **dict.fromkeys(("null", "Null", "NULL", "~"), None),
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
}
# YAML 1.1 booleans PyYAML resolves that a reader could take for strings: left to PyYAML
_FLAT_AMBIGUOUS = frozenset(("yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"))
_UNREAD = object()


def _flat_scalar(text: str) -> Any:
    if text in _FLAT_WORDS:
        return _FLAT_WORDS[text]
    if _FLAT_INT.fullmatch(text):
        return int(text)
    if _FLAT_STR.fullmatch(text) and text not in _FLAT_AMBIGUOUS and not text.endswith(":"):
        return text
    return _UNREAD


def flat_mapping(text: str, max_nodes: int = MAX_NODES) -> dict[str, Any] | None:
    """The document as PyYAML's safe_load would give it when it is a flat mapping of plain scalars
    (and block lists of them); None when it is anything else, for PyYAML to read."""
    if "\t" in text or "\r" in text or len(text) > 1024 * 1024:
        return None
    lines = text.split("\n")
    if lines and lines[0] == "---":
        lines = lines[1:]
    out: dict[str, Any] = {}
    nodes = 1
    key: str | None = None  # the key whose block list may follow
    items: list[Any] | None = None
    indent: str | None = None
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        if key is not None:
            item = _FLAT_ITEM.fullmatch(line)
            if item is not None and (indent is None or item.group(1) == indent):
                value = _flat_scalar(item.group(2))
                if value is _UNREAD:
                    return None
                indent = item.group(1)
                items = [] if items is None else items
                items.append(value)
                nodes += 1
                continue
            out[key] = items
            key, items, indent = None, None, None
        found = _FLAT_KEY.fullmatch(line)
        if found is None or found.group(1) in out or found.group(1) in _FLAT_WORDS or found.group(1) in _FLAT_AMBIGUOUS:
            return None  # duplicate keys (PyYAML keeps the last) and keys PyYAML reads as null or a boolean
        nodes += 2
        if found.group(2) is None:
            key = found.group(1)
            continue
        value = _flat_scalar(found.group(2))
        if value is _UNREAD:
            return None
        out[found.group(1)] = value
    if key is not None:
        out[key] = items
    if nodes > max_nodes or not out:
        return None
    return out


def load_yaml(text: str | bytes, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Like ``yaml.safe_load`` for one document, but raises :class:`YamlRefused` for aliases, deep
    nesting or too many nodes (and ``yaml.YAMLError`` for syntax, as before). A flat document of
    plain scalars is read without PyYAML (:func:`flat_mapping`), to the same result."""
    if isinstance(text, str) and max_depth >= 3:  # a mapping, a list in it, its items
        flat = flat_mapping(text, max_nodes)
        if flat is not None:
            return flat
    loader = _bounded_loader()(text, max_depth, max_nodes)
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
