"""One line of a checklist (attestation verification, preflight): what was checked, passed or not, and why.

Lives in core so library code can return checklists without importing the console; the console's
``output.checklist`` prints these (it only reads ``name``, ``ok`` and ``detail``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None = not applicable (nothing was expected), neither pass nor fail
    detail: str = ""
    #: for a failed rule-based check: the rule's id (e.g. attestation rules in docs/attestation.md)
    rule: str | None = None
    #: ... and the field or certificate it is about
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.rule is not None:
            out["rule"] = self.rule
        if self.field is not None:
            out["field"] = self.field
        return out


def all_passed(checks: list[Check]) -> bool:
    """True when nothing failed (not-applicable checks don't count against)."""
    return all(check.ok is not False for check in checks)
