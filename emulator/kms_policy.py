"""Key policy evaluation for the local KMS, as AWS KMS evaluates a key policy.

moto stores key policies but enforces none of them, so the Recipient layer (emulator/kms.py) asks
this module about every request that names a key. The rules are AWS's policy evaluation logic for a
key policy on its own (the emulator has no IAM, so nothing is granted outside the key policy):

* a statement applies when its Principal/NotPrincipal, Action/NotAction and Resource/NotResource
  match the request and every condition in its Condition block holds;
* an applicable Deny wins over everything; otherwise one applicable Allow allows; otherwise the
  request is implicitly denied;
* condition operators are the IAM ones (String*, Numeric*, Date*, Bool, BinaryEquals, IpAddress,
  NotIpAddress, Arn*, Null), each with ``IfExists`` (not Null) and the ``ForAllValues:`` /
  ``ForAnyValue:`` set qualifiers. Several values for one key are ORed, several keys and operators
  are ANDed. A key missing from the request context makes a positive operator false and a negated
  one (``...Not...``) true, ``IfExists`` true, ``ForAllValues`` true, ``ForAnyValue`` false;
* what this module cannot evaluate (an unknown operator or qualifier, a malformed statement, a
  policy variable) makes the whole policy unevaluable: the request is denied with that reason,
  never allowed. AWS would have refused such a policy at PutKeyPolicy, which moto does not.

The caller: moto authenticates every request as its one account, so the emulator's caller is that
account's root principal (``arn:aws:iam::<account>:root``) unless the layer is told another ARN.
A statement naming some other principal does not apply to it, as on AWS.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: bounds on what one policy may make us do (AWS caps a key policy at 32 KiB)
MAX_STATEMENTS = 200
MAX_VALUES = 1000

CONDITION_PREFIX = "kms:recipientattestation:"

_STRING = {
    "StringEquals": ("str", False),
    "StringNotEquals": ("str", True),
    "StringEqualsIgnoreCase": ("stri", False),
    "StringNotEqualsIgnoreCase": ("stri", True),
    "StringLike": ("glob", False),
    "StringNotLike": ("glob", True),
}
_NUMERIC = {
    "NumericEquals": ("eq", False),
    "NumericNotEquals": ("eq", True),
    "NumericLessThan": ("lt", False),
    "NumericLessThanEquals": ("le", False),
    "NumericGreaterThan": ("gt", False),
    "NumericGreaterThanEquals": ("ge", False),
}
_DATE = {
    "DateEquals": ("eq", False),
    "DateNotEquals": ("eq", True),
    "DateLessThan": ("lt", False),
    "DateLessThanEquals": ("le", False),
    "DateGreaterThan": ("gt", False),
    "DateGreaterThanEquals": ("ge", False),
}
_OTHER = {
    "Bool": ("bool", False),
    "BinaryEquals": ("str", False),
    "IpAddress": ("ip", False),
    "NotIpAddress": ("ip", True),
    "ArnEquals": ("arn", False),
    "ArnLike": ("arn", False),
    "ArnNotEquals": ("arn", True),
    "ArnNotLike": ("arn", True),
}


class PolicyUnevaluable(Exception):
    """The policy holds something the local KMS cannot judge; the request is denied with this text."""


@dataclass(frozen=True)
class RequestContext:
    """Who asks for what on which key, and the condition keys of the request (lower-case names)."""

    action: str  # e.g. "Decrypt" (without the kms: prefix)
    key_arn: str
    caller_arn: str
    account: str
    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    #: the Allow statements for this action that failed only on their conditions (for messages)
    mismatched: tuple[str, ...] = ()
    unevaluable: bool = False


# --- wildcards ----------------------------------------------------------------------------------------


def glob_match(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: ``*`` any run, ``?`` one character. Linear-time (no regex backtracking)."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    p = t = 0
    star_p, star_t = -1, 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_t = p, t
            p += 1
        elif star_p >= 0:
            p = star_p + 1
            star_t += 1
            t = star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _arn_match(pattern: str, arn: str) -> bool:
    """ArnEquals/ArnLike: the six colon-separated parts match one by one, each with wildcards."""
    pp = pattern.split(":", 5)
    ap = arn.split(":", 5)
    if len(pp) != 6 or len(ap) != 6:
        return pattern == arn
    return all(glob_match(x, y) for x, y in zip(pp, ap, strict=True))


# --- values -------------------------------------------------------------------------------------------


def _scalars(value: Any, what: str) -> list[str]:
    """A policy value (one scalar or a list of them) as strings, as IAM compares them."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_VALUES:
        raise PolicyUnevaluable(f"{what} lists more than {MAX_VALUES} values")
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float) and not (isinstance(item, float) and not math.isfinite(item)):
            out.append(str(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise PolicyUnevaluable(f"{what} has a value of type {type(item).__name__}")
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _date(text: str) -> float | None:
    """ISO 8601 (W3C) or epoch seconds, as a timestamp."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit() and len(stripped) <= 12:
        return float(stripped)
    try:
        stamp = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _compare(kind: str, how: str, actual: str, wanted: str, where: str) -> bool:
    """One request value against one policy value, with the positive sense of the operator."""
    if kind == "str":
        return actual == wanted
    if kind == "stri":
        return actual.casefold() == wanted.casefold()
    if kind == "glob":
        return glob_match(wanted, actual)
    if kind == "bool":
        if wanted.lower() not in ("true", "false"):
            raise PolicyUnevaluable(f"{where}: {wanted[:40]!r} is not true or false")
        return actual.lower() == wanted.lower()
    if kind == "arn":
        return _arn_match(wanted, actual)
    if kind == "ip":
        try:
            network = ipaddress.ip_network(wanted, strict=False)
        except ValueError:
            raise PolicyUnevaluable(f"{where}: {wanted[:60]!r} is not an IP address or CIDR range") from None
        try:
            return ipaddress.ip_address(actual) in network
        except ValueError:
            return False
    parse = _number if kind == "num" else _date
    w = parse(wanted)
    if w is None:
        raise PolicyUnevaluable(f"{where}: {wanted[:60]!r} is not a {'number' if kind == 'num' else 'date'}")
    a = parse(actual)
    if a is None:
        return False
    return {"eq": a == w, "lt": a < w, "le": a <= w, "gt": a > w, "ge": a >= w}[how]


@dataclass(frozen=True)
class _Operator:
    name: str
    kind: str
    how: str
    negated: bool
    if_exists: bool
    qualifier: str | None  # "ForAllValues" | "ForAnyValue" | None


def parse_operator(text: str) -> _Operator:
    qualifier = None
    base = text
    if ":" in text:
        qualifier, _, base = text.partition(":")
        if qualifier not in ("ForAllValues", "ForAnyValue"):
            raise PolicyUnevaluable(
                f"condition qualifier {qualifier[:40]!r} is not one the local KMS can evaluate"
            )
    if_exists = base.endswith("IfExists") and base != "IfExists"
    core = base[: -len("IfExists")] if if_exists else base
    if core == "Null":
        if if_exists or qualifier:
            raise PolicyUnevaluable(f"condition operator {text[:60]!r} is not valid")
        return _Operator(text, "null", "", False, False, None)
    if core in _STRING:
        kind, negated = _STRING[core]
        how = ""
    elif core in _NUMERIC:
        (how, negated), kind = _NUMERIC[core], "num"
    elif core in _DATE:
        (how, negated), kind = _DATE[core], "date"
    elif core in _OTHER:
        kind, negated = _OTHER[core]
        how = ""
    else:
        raise PolicyUnevaluable(f"condition operator {text[:60]!r} is not one the local KMS can evaluate")
    return _Operator(text, kind, how, negated, if_exists, qualifier)


def _holds(op: _Operator, key: str, wanted: list[str], actual: Sequence[str] | None, where: str) -> bool:
    if op.kind == "null":
        if len(wanted) != 1 or wanted[0].lower() not in ("true", "false"):
            raise PolicyUnevaluable(f"{where}: Null takes true or false")
        return (actual is None or len(actual) == 0) == (wanted[0].lower() == "true")

    def one(value: str) -> bool:
        # the operator's sense for one request value: positive = it matches one of the policy values
        hit = any(_compare(op.kind, op.how, value, w, where) for w in wanted)
        return not hit if op.negated else hit

    # every policy value is checked even when the request lacks the key: a malformed value denies
    probe = "0" if op.kind in ("num", "date") else ""
    for w in wanted:
        _compare(op.kind, op.how, probe, w, where)
    present = actual is not None and len(actual) > 0
    if op.qualifier == "ForAllValues":
        return not present or all(one(v) for v in actual or ())
    if op.qualifier == "ForAnyValue":
        return present and any(one(v) for v in actual or ())
    if not present:
        # AWS: a missing key fails a positive operator; a negated one (StringNotLike ...) holds
        return op.if_exists or op.negated
    if op.negated:
        return all(one(v) for v in actual or ())
    return any(one(v) for v in actual or ())


def conditions_hold(conditions: Any, context: Mapping[str, Sequence[str]], where: str) -> bool:
    if conditions is None:
        return True
    if not isinstance(conditions, Mapping):
        raise PolicyUnevaluable(f"{where}: Condition is not an object")
    result = True
    for operator, pairs in conditions.items():
        op = parse_operator(str(operator))
        if not isinstance(pairs, Mapping) or not pairs:
            raise PolicyUnevaluable(f"{where}: {str(operator)[:60]} does not map condition keys to values")
        for key, expected in pairs.items():
            key_l = str(key).lower()
            wanted = _scalars(expected, f"{where}: {str(key)[:80]}")
            if any("${" in w for w in wanted):
                raise PolicyUnevaluable(f"{where}: policy variables are not evaluated by the local KMS")
            # evaluate everything (malformed parts anywhere deny), then AND the results
            if not _holds(op, key_l, wanted, context.get(key_l), f"{where} {op.name} {str(key)[:80]}"):
                result = False
    return result


# --- statements ---------------------------------------------------------------------------------------


def _strings(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_VALUES or not all(isinstance(i, str) for i in items):
        raise PolicyUnevaluable(f"{what} must be a string or a non-empty list of strings")
    return items


def _action_matches(patterns: list[str], action: str) -> bool:
    wanted = f"kms:{action}"
    return any(p == "*" or glob_match(p, wanted, ignore_case=True) for p in patterns)


def _principal_matches(principal: Any, ctx: RequestContext, what: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping) or not principal:
        raise PolicyUnevaluable(f'{what} must be "*" or an object such as {{"AWS": ...}}')
    caller_names = {"*", ctx.account, f"arn:aws:iam::{ctx.account}:root", ctx.caller_arn}
    matched = False
    for kind, value in principal.items():
        names = _strings(value, f"{what}.{str(kind)[:20]}")
        if kind == "AWS":
            matched = matched or any(n in caller_names for n in names)
        elif kind in ("Service", "Federated", "CanonicalUser"):
            continue  # another kind of principal: never the emulator's caller
        else:
            raise PolicyUnevaluable(f"{what} has an unknown principal type {str(kind)[:40]!r}")
    return matched


def _one_of(st: Mapping[str, Any], a: str, b: str, where: str) -> tuple[str, Any]:
    has_a, has_b = a in st, b in st
    if has_a == has_b:
        raise PolicyUnevaluable(f"{where} must have exactly one of {a} and {b}")
    return (a, st[a]) if has_a else (b, st[b])


def statement_applies(st: Mapping[str, Any], ctx: RequestContext, where: str) -> bool:
    """Principal, action and resource match, and the conditions hold (PolicyUnevaluable if unsure)."""
    which, principal = _one_of(st, "Principal", "NotPrincipal", where)
    p_match = _principal_matches(principal, ctx, f"{where}.{which}")
    if which == "NotPrincipal":
        p_match = not p_match
    which, actions = _one_of(st, "Action", "NotAction", where)
    a_match = _action_matches(_strings(actions, f"{where}.{which}"), ctx.action)
    if which == "NotAction":
        a_match = not a_match
    which, resources = _one_of(st, "Resource", "NotResource", where)
    r_match = any(r == "*" or _arn_match(r, ctx.key_arn) for r in _strings(resources, f"{where}.{which}"))
    if which == "NotResource":
        r_match = not r_match
    # conditions are checked even when the rest does not match, so a malformed statement is never
    # silently skipped
    c_match = conditions_hold(st.get("Condition"), ctx.keys, where)
    return p_match and a_match and r_match and c_match


def _statements(policy: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    raw = policy.get("Statement")
    if raw is None:
        raise PolicyUnevaluable("the key policy has no Statement")
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > MAX_STATEMENTS:
        raise PolicyUnevaluable(f"the key policy has more than {MAX_STATEMENTS} statements")
    out = []
    for i, st in enumerate(items):
        if not isinstance(st, Mapping):
            raise PolicyUnevaluable(f"statement {i} is not an object")
        sid = st.get("Sid", f"statement {i}")
        out.append((str(sid)[:80], st))
    return out


def evaluate(policy: Mapping[str, Any], ctx: RequestContext) -> Decision:
    """AWS's verdict for ``ctx`` under ``policy``: explicit Deny, else an Allow, else implicit deny."""
    try:
        statements = _statements(policy)
        allowed_by: str | None = None
        mismatched: list[str] = []
        for sid, st in statements:
            where = repr(sid)
            effect = st.get("Effect")
            if effect not in ("Allow", "Deny"):
                raise PolicyUnevaluable(f"{where}: Effect must be Allow or Deny")
            if statement_applies(st, ctx, where):
                if effect == "Deny":
                    return Decision(False, f"denied by {where}")
                allowed_by = allowed_by or where
            elif effect == "Allow" and _matches_but_conditions(st, ctx, where):
                mismatched.append(sid)
    except PolicyUnevaluable as exc:
        return Decision(False, f"the key policy cannot be evaluated: {exc}", unevaluable=True)
    if allowed_by is not None:
        return Decision(True, f"allowed by {allowed_by}")
    if mismatched:
        return Decision(
            False,
            f"the conditions of {', '.join(repr(s) for s in mismatched)} do not hold",
            tuple(mismatched),
        )
    return Decision(False, f"no key policy statement allows kms:{ctx.action}")


def _matches_but_conditions(st: Mapping[str, Any], ctx: RequestContext, where: str) -> bool:
    bare = {k: v for k, v in st.items() if k != "Condition"}
    return "Condition" in st and statement_applies(bare, ctx, where)


def account_of_arn(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) >= 6 else ""


def recipient_keys(pcrs: Mapping[int, str]) -> dict[str, list[str]]:
    """The condition keys KMS derives from a verified attestation document (lower-case names)."""
    keys = {f"{CONDITION_PREFIX}pcr{i}": [v.lower()] for i, v in pcrs.items()}
    if 0 in pcrs:
        keys[f"{CONDITION_PREFIX}imagesha384"] = [pcrs[0].lower()]
    return keys
