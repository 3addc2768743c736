"""Typed errors. Every failure that reaches an operator is one of these: what went wrong, where, and a hint.

Modules subclass :class:`NitrodeckError` next to the code that raises it (EifError in core/eif.py, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NitrodeckError(Exception):
    """Base of every error nitrodeck reports. ``code`` is stable and machine-readable."""

    code: str = "ND-ERROR"
    #: process exit status used by the headless CLI
    exit_status: int = 1

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.where:
            out["where"] = self.where
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        text = self.message
        if self.where:
            text = f"{self.where}: {text}"
        if self.hint:
            text = f"{text}\nhint: {self.hint}"
        return text


class ConfigError(NitrodeckError):
    """A configuration file or flag is invalid."""

    code = "ND-CONFIG"
    exit_status = 2


class UsageError(NitrodeckError):
    """The command line is wrong (bad flag combination, bad value)."""

    code = "ND-USAGE"
    exit_status = 2


class ReadOnlyError(NitrodeckError):
    """A mutating action was attempted while nitrodeck runs read-only."""

    code = "ND-READ-ONLY"
    exit_status = 13


class InputTooLarge(NitrodeckError):
    """An input exceeded a parser's size limit."""

    code = "ND-TOO-LARGE"


@dataclass
class NitroCliError(NitrodeckError):
    """A nitro-cli style ``[ Exx ]`` failure, from real nitro-cli or nitro-emu."""

    code: str = "E00"  # type: ignore[misc]
    message: str = ""  # type: ignore[misc]
    hint: str | None = None  # type: ignore[misc]
    log_path: str | None = None
    argv: list[str] = field(default_factory=list)
    stderr: str = ""
    stdout: str = ""
    #: the root cause nitro-cli wrote to its error log (the innermost subaction), when it could be read
    detail: str | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)
        self.where = None

    @property
    def exit_status(self) -> int:  # type: ignore[override]
        try:
            return int(self.code.lstrip("E")) or 1
        except ValueError:
            return 1

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["log_path"] = self.log_path
        out["argv"] = self.argv
        if self.detail:
            out["detail"] = self.detail
        return out

    def __str__(self) -> str:
        text = f"[ {self.code} ] {self.message}"
        if self.detail and self.detail not in self.message:
            text += f"\nerror log says: {self.detail}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        if self.log_path:
            text += f"\nerror log: {self.log_path}"
        return text
