"""nitro-cli's error codes E00..E60: the printed detail text, the `explain` text, and the typed error.

Both texts are nitro-cli 1.5.0's own, whole (src/common/document_errors.rs), held as data in
data/nitro_cli_errors.json. A code's exit status is its number.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import NitrodeckError

HELP_URL = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{code}"
MISSING = "MISSING_INFO"
# nitro-cli's own texts (get_detailed_info, explain_error), kept as data: data/nitro_cli_errors.json
_TEXTS_FILE = Path(__file__).with_name("data") / "nitro_cli_errors.json"


@functools.cache
def _texts() -> dict[str, Any]:
    with open(_TEXTS_FILE, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _fill(template: str, info: list[str]) -> str:
    """Rust's positional ``{}`` in order; a missing parameter prints as MISSING_INFO, as there."""
    parts = template.split("{}")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        out += (info[i] if i < len(info) else MISSING) + part
    return out


def detail(code: str, info: list[str]) -> str:
    """The text after ``[ Exx ] ``, with nitro-cli's parameterised forms."""
    texts = _texts()
    template = texts["detail"].get(code)
    if template is None:
        return _fill(texts["unknown"], [code])
    if code == "E26" and len(info) < 3:
        return _fill(texts["detail_E26_zero"], info)
    out = _fill(template, info)
    if code == "E19" and len(info) >= 2:
        out += _fill(texts["detail_E19_file"], info)
    return out


def explain(code: str) -> str:
    """What ``nitro-cli explain`` prints (E57-E59 have no entry in 1.5.0: the unknown-code line)."""
    texts = _texts()
    return texts["explain"].get(code) or _fill(texts["unknown"], [code])


def known_code(code: str) -> bool:
    return code in _texts()["detail"]


@dataclass
class EmuError(NitrodeckError):
    """A failure reported as nitro-cli's ``[ Exx ]`` block. ``subactions`` go to the err log, innermost last."""

    code: str = "E00"  # type: ignore[misc]
    info: list[str] = field(default_factory=list)
    subactions: list[str] = field(default_factory=list)
    action: str | None = None

    def __post_init__(self) -> None:
        NitrodeckError.__init__(self, detail(self.code, self.info), where=self.action)

    @property
    def exit_status(self) -> int:  # type: ignore[override]
        return int(self.code[1:]) or 1  # E00 must not look like success

    def with_subaction(self, text: str) -> EmuError:
        self.subactions.insert(0, text)
        return self
