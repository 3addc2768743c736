"""Property tests of the driver's parsers: any text gives a model or a typed error, never a traceback."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from core.backends.base import Backend
from core.backends.driver import (
    error_from_output,
    parse_build,
    parse_eif,
    parse_enclaves,
    parse_error_blocks,
    parse_pcr,
    parse_run,
    parse_terminate,
    parse_terminate_all,
)
from core.errors import NitrodeckError

BACKEND = Backend("real", ("nitro-cli",), "nitro-cli")
PARSERS = (parse_enclaves, parse_run, parse_eif, parse_terminate, parse_terminate_all, parse_pcr,
           lambda t: parse_build(t, "o.eif"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["EnclaveID", "EnclaveName", "ProcessID", "EnclaveCID", "NumberOfCPUs", "CPUIDs",
                         "MemoryMiB", "State", "Flags", "Measurements", "PCR0", "PCR1", "PCR2", "PCR",
                         "Terminated", "EifVersion", "IsSigned", "CheckCRC", "HashAlgorithm"]) | st.text(max_size=8),
        inner, max_size=8),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_parsers_never_crash(value: object) -> None:
    text = json.dumps(value)
    for parse in PARSERS:
        try:
            parsed = parse(text)
        except NitrodeckError:
            continue
        # what a parser accepts, it takes from the JSON: one model per element, IDs and PCRs as given
        if parse is parse_enclaves:
            assert isinstance(value, list) and [e.enclave_id for e in parsed] == [v["EnclaveID"] for v in value]
        elif parse is parse_pcr:
            assert isinstance(value, dict) and parsed in (str(value.get("PCR", "")).lower(),
                                                          str(value.get("PCR8", "")).lower())
        elif parse is parse_terminate_all:
            assert len(parsed) == (len(value) if isinstance(value, list) else 1)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_json_parsers_on_any_text(text: str) -> None:
    for parse in PARSERS:
        try:
            parse(text)
        except NitrodeckError:
            continue
        # only valid JSON can give a model
        json.loads(text)


codes = st.integers(min_value=0, max_value=60).map(lambda n: f"E{n:02d}")
messages = st.text(st.characters(blacklist_characters="\n[", blacklist_categories=("Cs",)), min_size=1,
                   max_size=80).map(str.strip).filter(bool)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(codes, messages), min_size=1, max_size=3), st.text(max_size=50))
def test_error_blocks_round_trip(blocks: list[tuple[str, str]], noise: str) -> None:
    noise = noise.replace("[", "(")
    stderr = noise + "\n" + "".join(
        f"[ {code} ] {msg}\n\nFor more details, please visit https://x/#{code}\n\n"
        f'If you open a support ticket, please provide the error log found at "/l/{code}.log"\n'
        for code, msg in blocks
    )
    parsed = parse_error_blocks(stderr)
    assert [(b.code, b.message, b.log_path) for b in parsed] == [(c, m, f"/l/{c}.log") for c, m in blocks]
    err = error_from_output(["nitro-cli", "x"], stderr, 39, BACKEND)
    non39 = [c for c, _ in blocks if c != "E39"]
    assert err.code == (non39[0] if non39 else "E39")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=1, max_value=255))
def test_error_from_any_stderr_is_typed(stderr: str, exit_code: int) -> None:
    err = error_from_output(["nitro-cli"], stderr, exit_code, BACKEND)
    assert isinstance(err, NitrodeckError) and err.exit_status >= 1
