"""core.yamlsafe reads flat documents of plain scalars without PyYAML (status reads instance.yaml on
every run, and importing PyYAML costs more than that): wherever the flat reader answers, its answer is
PyYAML's safe_load's; everything else is left to PyYAML (None)."""

from __future__ import annotations

import subprocess
import sys

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.yamlsafe import YamlRefused, flat_mapping, load_yaml
from emulator.allocator import DEFAULT_ALLOCATOR
from emulator.instance import Instance, parse_instance
from tests.conftest import REPO

# scalars a configuration file may hold, including every spelling YAML 1.1 gives a meaning to
TRICKY = [
    "0", "7", "-3", "+3", "007", "0x1F", "0o17", "0b101", "1_000", "1:30", "1.5", "1e3", ".5", ".inf", "-.inf",
    ".nan", "NaN", "Infinity", "null", "Null", "NULL", "~", "", "true", "True", "TRUE", "tRUE", "false", "yes",
    "No", "on", "OFF", "y", "n", "2026-01-02", "2026-01-02T03:04:05Z", "i-0123456789abcdef0", "/usr/bin",
    "arn:aws:iam::123456789012:role/x", "a:", "a: b", "a #b", "a#b", "'q'", '"q"', "[1, 2]", "{a: 1}", "&a x",
    "*a", "!!str 5", "<<", "=", "-", "- x", "a,b", "2,3", "@x", "`x", "%x", "|", ">", "?", "a b", " a",
    "a ", "é", "999999999999999999", "9999999999999999999",
]
KEYS = ["instance_id", "vcpus", "a", "_x", "null", "true", "yes", "on", "Off", "~", "1", "a b", "k-1", "K"]

scalar = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet="abc01:-_./ #'\"", max_size=8),
    st.from_regex(r"[A-Za-z_/][A-Za-z0-9_./:@+-]{0,10}", fullmatch=True),
    st.integers(),
)
key = st.one_of(st.sampled_from(KEYS), st.from_regex(r"[a-z_]{1,6}", fullmatch=True))


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["---", "--- ", "...", "%YAML 1.1", "# comment", ""])))
    for _ in range(draw(st.integers(0, 6))):
        k = draw(key)
        kind = draw(st.sampled_from(["scalar", "list", "empty", "junk"]))
        if kind == "scalar":
            lines.append(f"{k}: {draw(scalar)}")
        elif kind == "list":
            lines.append(f"{k}:")
            indent = draw(st.sampled_from(["", "  ", " "]))
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"{draw(st.sampled_from([indent, indent, '    ']))}- {draw(scalar)}")
        elif kind == "empty":
            lines.append(f"{k}:")
        else:
            lines.append(draw(st.sampled_from(["  nested: 1", "# note", "   ", "\t", "k: v\r", "a: b: c", "- 1"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


@settings(max_examples=1500, deadline=None)
@given(documents())
def test_flat_reader_agrees_with_pyyaml(text: str) -> None:
    flat = flat_mapping(text)
    if flat is None:
        return
    assert flat == yaml.safe_load(text)
    # and the types, which == does not tell apart (True == 1, 0 == False)
    assert [type(v) for v in flat.values()] == [type(v) for v in yaml.safe_load(text).values()]


def test_the_files_status_reads_are_flat() -> None:
    written = Instance(instance_id="i-0123456789abcdef0", iam_role_arn="arn:aws:iam::1:role/x").to_yaml()
    assert flat_mapping(written) == yaml.safe_load(written)
    assert parse_instance(written) == Instance(instance_id="i-0123456789abcdef0", iam_role_arn="arn:aws:iam::1:role/x")
    assert flat_mapping(DEFAULT_ALLOCATOR) == {"memory_mib": 512, "cpu_count": 2}
    # what the flat reader leaves alone still gets PyYAML's answers and errors
    assert load_yaml("a: 'quoted'\nb: [1, 2]\n") == {"a": "quoted", "b": [1, 2]}
    for bad, kind in (("a: &x 1\nb: *x\n", YamlRefused), ("a: [1\n", yaml.YAMLError)):
        try:
            load_yaml(bad)
        except kind:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_status_does_not_import_pyyaml(nd_home: object) -> None:
    status = [sys.executable, "-m", "console", "status", "--json"]
    # the first status creates instance.yaml (written with PyYAML); the next ones only read it
    assert subprocess.run(status, capture_output=True, cwd=REPO, timeout=60).returncode == 0
    code = (
        "import contextlib, io, sys\n"
        "from console.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(['status', '--json'])\n"
        "print(code, 'yaml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.split() == ["0", "False"], out.stderr
