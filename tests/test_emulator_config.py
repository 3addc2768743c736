"""nitro-emu's parsers and models: allocator.yaml, instance.yaml, --config JSON, control frames, pools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import NitrodeckError
from emulator import allocator, control, state
from emulator.allocator import (
    AllocatorConfig,
    AllocatorError,
    parse_allocator,
    pick_pages,
)
from emulator.cli import parse_config, parse_memory
from emulator.errors import EmuError, detail, explain, known_code
from emulator.instance import Instance, InstanceConfigError, load_instance, parse_instance

REPO = Path(__file__).resolve().parent.parent


def emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


# --- instance.yaml --------------------------------------------------------------------------------


def test_instance_created_once_with_defaults(nd_home: Path) -> None:
    first = load_instance()
    assert first.vcpus == 8 and first.cores == 4 and first.threads_per_core == 2
    assert first.memory_mib == 16384 and first.numa_nodes == 1 and first.iam_role_arn is None
    assert first.hugepage_sizes_kb == [1048576, 2048]
    assert first.instance_id.startswith("i-") and len(first.instance_id) == 19
    assert load_instance().instance_id == first.instance_id  # stored, not regenerated
    assert first.siblings(1) == [1, 5] and first.siblings(4) == [0, 4]


def test_instance_rejects_inconsistent_topology() -> None:
    with pytest.raises(InstanceConfigError, match="threads_per_core"):
        parse_instance("instance_id: i-0123\nvcpus: 8\ncores: 3\n")
    with pytest.raises(InstanceConfigError, match="unknown key"):
        parse_instance("instance_id: i-0123\nvcpu: 8\n")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_instance_parser_never_crashes(text: str) -> None:
    try:
        inst = parse_instance(text)
    except NitrodeckError:
        return
    assert inst.cores * inst.threads_per_core == inst.vcpus


# --- allocator.yaml and pools ---------------------------------------------------------------------


INST = Instance(instance_id="i-0123456789abcdef0")


def start(text: str, inst: Instance = INST, previous: allocator.AllocatorState | None = None,
          running: bool = False) -> allocator.AllocatorState:
    return allocator.run_allocator(inst, text, "/etc/nitro_enclaves/allocator.yaml", previous, running)


def test_default_allocator_gives_one_full_core_and_2mib_pages(nd_home: Path) -> None:
    st = allocator.allocator_state(INST)
    assert allocator.allocator_file().read_text() == "---\nmemory_mib: 512\ncpu_count: 2\n"
    assert st.cpu_pool == [1, 5] and st.hugepages == {1048576: 0, 2048: 256} and st.error is None
    # the script's own lines (bootstrap/nitro-enclaves-allocator)
    assert st.output == [
        "Auto-generating the enclave CPU pool by using the CPU count...",
        "Will try to reserve 512 MB of memory on node 0.",
        "Configuring the huge page memory...",
        "- Reserved 256 pages of type: 2048kB.",
        "Done.",
        "Auto-generated the enclave CPU pool: 1,5.",
        "Configuring the enclave CPU pool...",
        "Done.",
        "Successfully allocated Nitro Enclaves resources: 512 MiB, 2 CPUs",
    ]


def test_allocator_yaml_is_read_once_at_start(nd_home: Path) -> None:
    """The service reads allocator.yaml when it starts: editing the file changes nothing until a restart."""
    assert allocator.allocator_state(INST).cpu_pool == [1, 5]
    allocator.allocator_file().write_text("---\nmemory_mib: 1024\ncpu_count: 4\n")
    assert allocator.allocator_state(INST).cpu_pool == [1, 5]
    assert allocator.start_allocator(INST).cpu_pool == [1, 5, 2, 6]
    assert allocator.allocator_state(INST).hugepages == {1048576: 1, 2048: 0}
    # a file the parser refuses keeps the pools of the last good start, with the error
    allocator.allocator_file().write_text("---\nmemory_mib: 1024\ncpu_count: 2\nfoo: 1\n")
    st = allocator.start_allocator(INST)
    assert st.cpu_pool == [1, 5, 2, 6] and st.error == f"Error in {allocator.allocator_file()}:4 - unexpected: foo"
    # with enclaves running the CPUs cannot be re-onlined: nothing changes
    allocator.allocator_file().write_text("---\nmemory_mib: 512\ncpu_count: 2\n")
    st = allocator.start_allocator(INST, enclaves_running=True)
    assert st.cpu_pool == [1, 5, 2, 6] and st.output == [f"Error: {allocator.RUNNING_ENCLAVES}"]


def test_allocator_parses_line_by_line_like_its_script() -> None:
    """parse_config in bootstrap/nitro-enclaves-allocator: nothing before ---, # lines skipped, key before
    the first colon, value after the last one, quotes and one run of blanks dropped."""
    assert parse_allocator("memory_mib: 1\n---\nmemory_mib: 512\ncpu_count: 2\n") == AllocatorConfig("512", "2")
    assert parse_allocator('---\n  # c\n  memory_mib: "1,2:3"\ncpu_pool: 1,5\n') == AllocatorConfig("3", None, "1,5")
    assert parse_allocator("---\nmemory_mib 512\ncpu_count: 2 # two\n") == AllocatorConfig("memory_mib512", "2 # two")
    # `while read line` never sees a last line without its newline
    with pytest.raises(AllocatorError, match=r": Config error: missing CPU reservation \(either `cpu_count` or `cpu_pool`\)\.$"):
        parse_allocator("---\nmemory_mib: 512\ncpu_count: 2")
    with pytest.raises(AllocatorError, match=r": Error in a.yaml:3 - unexpected: $"):
        parse_allocator("---\nmemory_mib: 512\n\ncpu_count: 2\n", "a.yaml")
    with pytest.raises(AllocatorError, match=r": Error in a.yaml:2 - missing value for memory_mib$"):
        parse_allocator("---\nmemory_mib:\n", "a.yaml")
    with pytest.raises(AllocatorError, match=r": Config error: missing memory reservation \(`memory_mib`\)\.$"):
        parse_allocator("---\ncpu_count: 2\n")
    with pytest.raises(AllocatorError, match=r": Config error: `cpu_count` conflicts with `cpu_pool`\.$"):
        parse_allocator("---\nmemory_mib: 512\ncpu_count: 2\ncpu_pool: 1,5\n")
    assert parse_allocator("---\nmemory_mib: 512\ncpu_count: 0\n").cpu_count == "0"


def test_allocator_messages_and_rounding() -> None:
    def error(text: str) -> str | None:
        return start(text).error

    assert error("---\nmemory_mib: 512\ncpu_count: 0\n") == "Provided CPU count is not higher than 0."
    assert error("---\nmemory_mib: 512\ncpu_count: two\n") == "The CPU count value (two) is invalid."
    assert error("---\nmemory_mib: 512\ncpu_count: 10\n") == "Provided CPU count is higher than available CPUs - 8."
    assert error("---\nmemory_mib: 512\ncpu_count: 3\n") == "The CPU count is not multiple of 2 (threads per core)."
    assert error("---\nmemory_mib: 512\ncpu_count: 8\n") == (
        "Failed to find suitable CPUs for the Nitro Enclaves CPU pool after checking all NUMA nodes."
    )
    assert error("---\nmemory_mib: 5x\ncpu_count: 2\n") == "The needed memory amount (5x) is invalid."
    assert error("---\nmemory_mib: 999999\ncpu_count: 2\n") == allocator.ALLOCATOR_ERRORS[206]
    for pool in ("0,4", "1", "1,5,9", "x"):
        st = start(f"---\nmemory_mib: 512\ncpu_pool: {pool}\n")
        assert st.error == "Failed to configure the CPU pool." and st.cpu_pool == []
        assert st.output[-2].startswith("nitro-emu: the driver refused the CPU pool")
    ok = start("---\nmemory_mib: 512\ncpu_pool: 2,3,6-7\n")
    assert ok.cpu_pool == [2, 3, 6, 7] and ok.output[-1].endswith("512 MiB, CPU pool: 2,3,6-7")
    # rounded up to the smallest page, then the largest pages first: 1023 MiB is one 1 GiB page;
    # 0 MiB still reserves one 2 MiB page (bash's (1 + (0 - 1) / s) * s)
    assert start("---\nmemory_mib: 1023\ncpu_count: 2\n").hugepages == {1048576: 1, 2048: 0}
    assert start("---\nmemory_mib: 0\ncpu_count: 2\n").hugepages == {1048576: 0, 2048: 1}
    assert start("---\nmemory_mib: 2100\ncpu_count: 2\n").hugepages == {1048576: 2, 2048: 26}
    # a failure after the CPUs were re-onlined leaves no pool
    before = start("---\nmemory_mib: 512\ncpu_count: 2\n")
    after = start("---\nmemory_mib: 512\ncpu_count: 3\n", previous=before)
    assert after.cpu_pool == [] and after.hugepages == before.hugepages


def test_hugepages_enclave_picks() -> None:
    pool = {1048576: 2, 2048: 26}
    # 1 GiB pages first while the need is at least a page, the rest from 2 MiB pages
    assert pick_pages(pool, 1050) == {1048576: 1, 2048: 13}
    # not enough small pages for the rest: a second large page, and the small ones are given back
    assert pick_pages(pool, 1100) == {1048576: 2}
    # a request smaller than a large page, with no small pages left, takes the large page
    assert pick_pages({1048576: 1, 2048: 0}, 512) == {1048576: 1}
    assert allocator.pages_mib({1048576: 1}) == 1024
    assert pick_pages({2048: 10}, 64) == 44  # 10 pages hold 20 MiB: 44 MiB missing


@settings(max_examples=120, deadline=None)
@given(st.text(max_size=300))
def test_allocator_parser_never_crashes(text: str) -> None:
    try:
        cfg = parse_allocator(text)
    except NitrodeckError:
        return
    assert cfg.memory_mib and bool(cfg.cpu_count) != bool(cfg.cpu_pool)
    st = start(text)
    assert st.error is not None or st.cpu_pool


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(st.sampled_from([1048576, 2048]), st.integers(0, 20)), st.integers(1, 30000))
def test_page_picks_cover_the_request_or_say_what_is_missing(free: dict[int, int], mib: int) -> None:
    got = pick_pages(free, mib)
    if isinstance(got, int):
        assert got > 0
        assert allocator.pages_mib(free) < mib
    else:
        assert allocator.pages_mib(got) >= mib
        assert all(got[s] <= free.get(s, 0) for s in got)


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 200), max_size=40))
def test_cpu_list_round_trip(cpus: set[int]) -> None:
    text = allocator.format_cpu_list(cpus)
    assert allocator.parse_cpu_list(text) == sorted(cpus)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789,- x", max_size=60))
def test_cpu_list_parser_only_raises_typed_errors(text: str) -> None:
    try:
        cpus = allocator.parse_cpu_list(text)
    except AllocatorError:
        return
    assert cpus == sorted(set(cpus))


def test_memory_units() -> None:
    assert [parse_memory(v) for v in ("512", "512M", "2g", "1T")] == [512, 512, 2048, 1024 * 1024]
    for bad in ("256_mb", "", "1.5G", "-1"):
        with pytest.raises(EmuError) as err:
            parse_memory(bad)
        assert err.value.code == "E03"


# --- run-enclave --config -------------------------------------------------------------------------


def test_config_rules() -> None:
    ok = parse_config(json.dumps({"eif_path": "a.eif", "memory_mib": 512, "cpu_count": 2, "attach_console": True}).encode(), "c")
    assert ok["debug"] is True and ok["cpu_count"] == 2
    with pytest.raises(EmuError) as e01:
        parse_config(b'{"eif_path": "a.eif", "memory_mib": 512}', "c")
    assert e01.value.code == "E01"
    with pytest.raises(EmuError) as e02:
        parse_config(b'{"eif_path": "a.eif", "memory_mib": 512, "cpu_count": 2, "cpu_ids": [1]}', "c")
    assert e02.value.code == "E02"
    with pytest.raises(EmuError) as e17:
        parse_config(b"{not json", "c")
    assert e17.value.code == "E17"


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["eif_path", "memory_mib", "cpu_count", "cpu_ids", "enclave_cid", "debug_mode", "x"]),
            st.one_of(st.integers(-5, 2**40), st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(-1, 9), max_size=4)),
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_config_parser_only_raises_typed_errors(raw: bytes) -> None:
    try:
        req = parse_config(raw, "fuzz")
    except EmuError as err:
        assert err.code in ("E01", "E02", "E03", "E17")
        return
    assert isinstance(req["memory_mib"], int) and isinstance(req["eif_path"], str)
    assert (req["cpu_count"] is None) != (req["cpu_ids"] is None)


# --- control frames -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_control_request_parser(raw: bytes) -> None:
    try:
        cmd = control.parse_request(raw)
    except NitrodeckError:
        return
    assert cmd in control.COMMANDS


def test_control_frame_limit() -> None:
    with pytest.raises(NitrodeckError):
        control.decode_body(b" " * (control.MAX_FRAME + 1))
    assert control.parse_request(control.encode({"cmd": "describe"})[4:]) == "describe"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_enclave_table_parser(raw: bytes) -> None:
    try:
        entries = state._parse(raw, "fuzz")
    except NitrodeckError:
        return
    assert isinstance(entries, list)


def test_enclave_table_round_trip() -> None:
    entry = state.Entry("i-1-enc2", "app", 16, 1, 2, [1, 5], 64, {2048: 32}, False, "/a.eif", "2")
    raw = json.dumps({"enclaves": [entry.to_json()]}).encode()
    assert state._parse(raw, "t") == [entry]


# --- errors, explain, usage -----------------------------------------------------------------------


def test_every_code_has_a_message() -> None:
    assert [c for c in (f"E{n:02d}" for n in range(62)) if known_code(c)] == [f"E{n:02d}" for n in range(61)]
    assert detail("E61", []) == "No such error code E61"
    assert explain("E57") == "No such error code E57"
    assert "Naming error." not in explain("E58")
    assert detail("E26", ["memory", "512", "2148"]).endswith("the minimum memory should be 2148 MB")


def test_cli_version_help_and_explain(nd_home: Path) -> None:
    assert emu("--version").stdout == "Nitro CLI 1.5.0\n"
    none = emu()
    assert none.returncode == 2 and "usage:" in none.stderr and "emulated" in none.stderr
    exp = emu("explain", "--error-code", "E26")
    assert exp.returncode == 0 and exp.stderr.startswith("Insufficient memory requested.") and exp.stdout == ""
    unknown = emu("explain", "--error-code", "E99")
    assert unknown.returncode == 0 and unknown.stderr == "No such error code E99\n"
    usage = emu("terminate-enclave")
    assert usage.returncode == 2 and "\nUsage: nitro-cli terminate-enclave" in usage.stderr and "[ E" not in usage.stderr
    both = emu("run-enclave", "--cpu-count", "2", "--cpu-ids", "1", "--memory", "64", "--eif-path", "x")
    assert both.returncode == 2 and "[ E" not in both.stderr
    assert emu("describe-enclaves").stdout == "[]\n"


def test_cli_level_errors_are_not_wrapped(nd_home: Path) -> None:
    e03 = emu("run-enclave", "--cpu-count", "2", "--memory", "256_mb", "--eif-path", "x.eif")
    assert e03.returncode == 3
    assert e03.stderr.splitlines()[0] == "[ E03 ] Invalid argument provided. The parameter `memory` is not a valid integer (`256_mb`)"
    cid = emu("run-enclave", "--cpu-count", "2", "--memory", "64", "--eif-path", "x.eif", "--enclave-cid", "3")
    # nitro-cli attaches no parameters to its CID errors: the line really says MISSING_INFO
    assert cid.returncode == 3 and cid.stderr.startswith(
        "[ E03 ] Invalid argument provided. The parameter `MISSING_INFO` is not a valid integer (`MISSING_INFO`)"
    )
    timeout = emu("console", "--enclave-id", "x", "--disconnect-timeout", "soon")
    assert timeout.returncode == 3 and "The parameter `disconnect-timeout` is not a valid integer (`soon`)" in timeout.stderr
    cfg = emu("run-enclave", "--config", str(nd_home / "missing.json"))
    assert cfg.returncode == 19 and "failing operation: 'Open'." in cfg.stderr
    logline = [line for line in cfg.stderr.splitlines() if line.startswith("If you open a support ticket")][0]
    log = Path(logline.split('"')[1])
    assert log.parent == nd_home / "emulator" / "log" and log.name.startswith("err") and log.name.endswith("+00:00.log")
    text = log.read_text()
    assert text.startswith("  Action: Run Enclave\n  Subactions:\n") and "Root error line: " in text and "Version: 1.5.0" in text


def test_unknown_enclave_id_is_e11_and_eif_missing_is_wrapped(nd_home: Path) -> None:
    e11 = emu("terminate-enclave", "--enclave-id", "i-0123-enc0")
    assert e11.returncode == 11 and e11.stderr.startswith("[ E11 ] Socket error.")
    assert "#E11" in e11.stderr
    e58 = emu("console", "--enclave-name", "nobody")
    assert e58.returncode == 58 and e58.stderr.startswith("[ E58 ]")
    missing = emu("run-enclave", "--cpu-count", "2", "--memory", "64", "--eif-path", str(nd_home / "none.eif"))
    lines = missing.stderr.splitlines()
    assert missing.returncode == 39
    assert lines[0].startswith("[ E19 ] File operation failure. Such error appears")
    assert "Failed connections: 1" in lines
    assert lines[lines.index("Failed connections: 1") + 1].startswith("[ E39 ] Enclave process connection failure.")


def test_corrupt_enclave_table_is_rebuilt_and_reported(nd_home: Path) -> None:
    """Issue 9 item 7: a corrupt table was E00 (and orphaned running enclaves); it is now rebuilt from
    the supervisors that are alive (none here), with a warning that says what was wrong."""
    run_dir = nd_home / "emulator" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "enclaves.json").write_text("{garbage")
    res = emu("describe-enclaves")
    assert res.returncode == 0 and json.loads(res.stdout) == [] and "Traceback" not in res.stderr
    assert res.stderr.startswith("nitro-emu: the enclave table was unreadable (corrupt enclave table")
    assert json.loads((run_dir / "enclaves.json").read_text()) == {"enclaves": []}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_supervisor_records_are_read_or_ignored(raw: bytes) -> None:
    """A supervisor's own record: garbage is ignored (never trusted, never a crash)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "abc"
        folder.mkdir()
        (folder / state.RECORD).write_bytes(raw)
        entry = state._read_record(folder)
        assert entry is None or entry.slot == "abc"
