"""emulator/kms_policy.py: AWS's key policy evaluation, operator by operator (the HTTP path against a
real moto server is in test_kms_layer.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kms_policy import RequestContext, evaluate, glob_match

ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROOT = "arn:aws:iam::123456789012:root"


def ctx(action: str = "Decrypt", **keys: list[str]) -> RequestContext:
    return RequestContext(action, ARN, ROOT, "123456789012", {k.lower(): v for k, v in keys.items()})


def allow(condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    st_: dict[str, Any] = {"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    if condition is not None:
        st_["Condition"] = condition
    st_.update(extra)
    return {"Version": "2012-10-17", "Statement": [st_]}


def verdict(condition: dict[str, Any], context: RequestContext) -> bool:
    return evaluate(allow(condition), context).allowed


@pytest.mark.parametrize(
    ("condition", "keys", "expected"),
    [
        # positive operators fail on a missing key, negated ones hold, IfExists holds
        ({"StringEquals": {"k": "v"}}, {}, False),
        ({"StringNotEquals": {"k": "v"}}, {}, True),
        ({"StringNotLike": {"k": "v*"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "v"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "v"}}, {"k": ["w"]}, False),
        ({"StringLike": {"k": ["x*", "v?"]}}, {"k": ["va"]}, True),
        ({"StringLike": {"k": "v?"}}, {"k": ["vab"]}, False),
        ({"StringEqualsIgnoreCase": {"k": "ABC"}}, {"k": ["abc"]}, True),
        ({"StringEquals": {"k": "ABC"}}, {"k": ["abc"]}, False),
        ({"StringNotEqualsIgnoreCase": {"k": "ABC"}}, {"k": ["abc"]}, False),
        # several keys in one operator are ANDed, several values ORed
        ({"StringEquals": {"k": ["a", "b"], "j": "c"}}, {"k": ["b"], "j": ["c"]}, True),
        ({"StringEquals": {"k": ["a", "b"], "j": "c"}}, {"k": ["b"], "j": ["d"]}, False),
        ({"NumericLessThan": {"n": "10"}}, {"n": ["9.5"]}, True),
        ({"NumericGreaterThanEquals": {"n": 10}}, {"n": ["10"]}, True),
        ({"NumericNotEquals": {"n": "10"}}, {"n": ["10"]}, False),
        ({"NumericEquals": {"n": "10"}}, {"n": ["ten"]}, False),
        ({"DateLessThan": {"t": "2030-01-01T00:00:00Z"}}, {"t": ["2026-12-02T10:00:00Z"]}, True),
        ({"DateGreaterThan": {"t": "1700000000"}}, {"t": ["2026-12-02T10:00:00Z"]}, True),
        ({"Bool": {"b": "true"}}, {"b": ["true"]}, True),
        ({"Bool": {"b": True}}, {"b": ["false"]}, False),
        ({"BinaryEquals": {"x": "QUJD"}}, {"x": ["QUJD"]}, True),
        ({"IpAddress": {"ip": "10.0.0.0/8"}}, {"ip": ["10.1.2.3"]}, True),
        ({"NotIpAddress": {"ip": ["10.0.0.0/8", "127.0.0.1/32"]}}, {"ip": ["127.0.0.1"]}, False),
        ({"ArnLike": {"a": "arn:aws:iam::*:role/x*"}}, {"a": ["arn:aws:iam::1:role/xyz"]}, True),
        ({"ArnNotLike": {"a": "arn:aws:iam::*:role/x*"}}, {"a": ["arn:aws:iam::1:role/xyz"]}, False),
        ({"ArnEquals": {"a": "arn:aws:iam::1:root"}}, {}, False),
        ({"Null": {"k": "true"}}, {}, True),
        ({"Null": {"k": "false"}}, {}, False),
        ({"Null": {"k": "false"}}, {"k": ["v"]}, True),
        # set qualifiers
        ({"ForAllValues:StringEquals": {"s": ["a", "b"]}}, {}, True),
        ({"ForAllValues:StringEquals": {"s": ["a", "b"]}}, {"s": ["a", "b"]}, True),
        ({"ForAllValues:StringEquals": {"s": ["a", "b"]}}, {"s": ["a", "c"]}, False),
        ({"ForAnyValue:StringEquals": {"s": ["a"]}}, {}, False),
        ({"ForAnyValue:StringEquals": {"s": ["a"]}}, {"s": ["c", "a"]}, True),
        ({"ForAnyValue:StringNotLike": {"s": ["a*"]}}, {"s": ["ab", "b"]}, True),
        ({"ForAllValues:StringNotLike": {"s": ["a*"]}}, {"s": ["ab", "b"]}, False),
        # several operators are ANDed
        ({"StringEquals": {"k": "v"}, "Null": {"j": "true"}}, {"k": ["v"], "j": ["x"]}, False),
        # condition key names are case-insensitive, values are not
        ({"StringEquals": {"KMS:RecipientAttestation:PCR0": "ab"}}, {"kms:recipientattestation:pcr0": ["ab"]}, True),
    ],
)
def test_condition_operators(condition: dict[str, Any], keys: dict[str, list[str]], expected: bool) -> None:
    assert verdict(condition, ctx(**keys)) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"StringEqualsRegex": {"k": "v"}},
        {"ForEveryValue:StringEquals": {"k": "v"}},
        {"ForAnyValue:Null": {"k": "true"}},
        {"NullIfExists": {"k": "true"}},
        {"Null": {"k": "maybe"}},
        {"Bool": {"k": "yes"}},
        {"NumericEquals": {"k": "NaN"}},
        {"DateEquals": {"k": "someday"}},
        {"IpAddress": {"k": "10.0.0.0/33"}},
        {"StringEquals": {"k": None}},
        {"StringEquals": "k"},
        {"StringEquals": {}},
        {"StringEquals": {"k": "${aws:username}"}},
    ],
)
def test_unevaluable_conditions_deny_even_in_a_deny_statement(condition: dict[str, Any]) -> None:
    policy = allow()
    policy["Statement"].append(
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*", "Condition": condition}
    )
    decision = evaluate(policy, ctx())
    assert decision.allowed is False and decision.unevaluable
    assert "cannot be evaluated" in decision.reason


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Action": "kms:Decrypt"}, True),
        ({"Action": "KMS:decrypt"}, True),  # actions are case-insensitive
        ({"Action": "kms:De*"}, True),
        ({"Action": "kms:Encrypt"}, False),
        ({"Action": None, "NotAction": "kms:Encrypt"}, True),
        ({"Action": None, "NotAction": "kms:Decrypt"}, False),
        ({"Resource": ARN}, True),
        ({"Resource": "arn:aws:kms:*:*:key/other"}, False),
        ({"Resource": None, "NotResource": "arn:aws:kms:*:*:key/other"}, True),
        ({"Principal": {"AWS": ROOT}}, True),
        ({"Principal": {"AWS": "123456789012"}}, True),
        ({"Principal": {"AWS": "arn:aws:iam::123456789012:role/other"}}, False),
        ({"Principal": {"Service": "ec2.amazonaws.com"}}, False),
        ({"Principal": None, "NotPrincipal": {"AWS": "arn:aws:iam::999999999999:root"}}, True),
        ({"Principal": None, "NotPrincipal": {"AWS": ROOT}}, False),
    ],
)
def test_statement_elements(statement: dict[str, Any], expected: bool) -> None:
    policy = allow()
    for key, value in statement.items():
        if value is None:
            policy["Statement"][0].pop(key)
        else:
            policy["Statement"][0][key] = value
    assert evaluate(policy, ctx()).allowed is expected


def test_malformed_statements_deny() -> None:
    for broken in (
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},  # no principal
        {"Effect": "Allow", "Principal": "*", "Resource": "*"},  # no action
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*"},  # no resource
        {"Effect": "allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "NotAction": "kms:Sign", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"Weird": "x"}, "Action": "kms:*", "Resource": "*"},
    ):
        decision = evaluate({"Statement": [broken]}, ctx())
        assert decision.allowed is False and decision.unevaluable, broken


def test_explicit_deny_wins_whatever_the_order() -> None:
    deny = {"Sid": "d", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    for statements in ([allow()["Statement"][0], deny], [deny, allow()["Statement"][0]]):
        decision = evaluate({"Statement": statements}, ctx())
        assert decision.allowed is False and decision.reason == "denied by 'd'"


def test_glob_is_linear() -> None:
    # a regex translation of this pattern backtracks for minutes; the matcher must not
    assert glob_match("*a" * 40 + "b", "a" * 100_000) is False
    assert glob_match("a*b?d", "axxxbcd") and not glob_match("a*b?d", "axxxbd")


_VALUE = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.lists(st.text(max_size=4), max_size=3)
_OPS = st.sampled_from(
    ["StringEquals", "StringNotLike", "NumericLessThan", "DateGreaterThan", "Bool", "IpAddress", "ArnLike", "Null",
     "ForAllValues:StringLike", "ForAnyValue:NumericEquals", "StringEqualsIfExists", "Bogus", "ForAnyValue:Null"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(_OPS, st.dictionaries(st.sampled_from(["k", "j", "aws:SourceIp"]), _VALUE, max_size=2), max_size=3),
    st.dictionaries(st.sampled_from(["k", "j", "aws:sourceip"]), st.lists(st.text(max_size=6), max_size=3)),
    st.sampled_from(["Allow", "Deny"]),
)
def test_fuzz_conditions_always_decide(condition: Any, keys: dict[str, list[str]], effect: str) -> None:
    policy = allow(condition)
    policy["Statement"][0]["Effect"] = effect
    decision = evaluate(policy, ctx(**keys))
    assert isinstance(decision.allowed, bool) and decision.reason
    if effect == "Deny":
        assert decision.allowed is False


def test_a_role_caller_is_covered_by_the_account_principal_and_its_own_arn() -> None:
    """As on AWS: Principal <account>:root stands for every identity of the account (IAM allowing),
    a role ARN only for that role."""
    role = "arn:aws:iam::123456789012:role/parent"
    as_role = RequestContext("Decrypt", ARN, role, "123456789012", {})
    for principal, expected in (
        ({"AWS": ROOT}, True),
        ({"AWS": role}, True),
        ({"AWS": "arn:aws:iam::123456789012:role/other"}, False),
        ({"AWS": "arn:aws:iam::999999999999:root"}, False),
    ):
        assert evaluate(allow(Principal=principal), as_role).allowed is expected, principal


def test_the_local_kms_judges_requests_as_the_instance_role(nd_home: Any) -> None:
    from emulator.kms import LocalKms, instance_role

    assert instance_role() is None  # no instance.yaml: the account root, and none is created
    assert not (nd_home / "emulator" / "instance.yaml").exists()
    (nd_home / "emulator").mkdir(parents=True, exist_ok=True)
    (nd_home / "emulator" / "instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\niam_role_arn: arn:aws:iam::123456789012:role/parent\n"
    )
    kms = LocalKms().start()
    try:
        assert kms.layer is not None and kms.layer.caller == "arn:aws:iam::123456789012:role/parent"
    finally:
        kms.stop()
