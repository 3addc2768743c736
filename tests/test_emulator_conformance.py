"""nitro-emu against nitro-cli 1.5.0, byte for byte: one test per row of docs/emulator.md's table.

The expected texts come from tests/nitro_cli_texts.py (nitro-cli's source, file and line cited there);
nothing here is read back from emulator/ to build an expectation. Only an err log's path, which holds
the time, is matched by pattern.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import nitro_cli_texts as T
from tests.test_emulator_run import build  # an EIF whose command is a shell script

REPO = Path(__file__).resolve().parent.parent
# common/mod.rs:377 construct_error_message, without BACKTRACE; document_errors.rs:347 help link
HELP = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{}"
LOG_PATH = r"[^\"\n]+/err\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}\+00:00\.log"


def emu(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def fill(template: str, *info: str) -> str:
    """Rust's positional ``{}``; a missing parameter is MISSING_INFO (document_errors.rs:79)."""
    parts = template.split("{}")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        out += (info[i] if i < len(info) else "MISSING_INFO") + part
    return out


def block(code: str, text: str) -> str:
    """One error as nitro-cli prints it (common/mod.rs:377, then eprintln!), as a regex."""
    return (
        re.escape(f"[ {code} ] {text}\n\nFor more details, please visit {HELP.format(code)}\n\n")
        + re.escape('If you open a support ticket, please provide the error log found at "')
        + LOG_PATH
        + re.escape('"\n')
    )


def assert_stderr(res: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert re.fullmatch(pattern, res.stderr), f"stderr differs:\n{res.stderr}\n--- expected (regex) ---\n{pattern}"


# --- explain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [f"E{n:02d}" for n in range(61)] + ["E61", "X"])
def test_explain_prints_nitro_clis_text(nd_home: Path, code: str) -> None:
    res = emu("explain", "--error-code", code)
    expected = T.EXPLAIN.get(code) or fill(T.UNKNOWN_CODE, code)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", expected + "\n")


# --- failures of single commands (no enclave needed) -----------------------------------------------


def test_pcr_input_missing_is_e19_without_file_line(nd_home: Path) -> None:
    # lib.rs:573 get_file_pcr: File::open fails -> FileOperationFailure, no add_info
    res = emu("pcr", "--input", str(nd_home / "absent"))
    assert (res.returncode, res.stdout) == (19, "")
    assert_stderr(res, block("E19", T.DETAIL["E19"]))


def test_pcr_certificate_not_pem_is_e57(nd_home: Path) -> None:
    # lib.rs:591 X509::from_pem fails -> HasherError
    bad = nd_home / "bad.pem"
    bad.write_text("not a certificate\n")
    res = emu("pcr", "--signing-certificate", str(bad))
    assert (res.returncode, res.stdout) == (57, "")
    assert_stderr(res, block("E57", T.DETAIL["E57"]))


def test_describe_eif_missing_file_is_e35(nd_home: Path) -> None:
    # lib.rs:224 EifReader::from_eif fails (it opens the file) -> EifParsingError, no add_info
    res = emu("describe-eif", "--eif-path", str(nd_home / "absent.eif"))
    assert (res.returncode, res.stdout) == (35, "")
    assert_stderr(res, block("E35", T.DETAIL["E35"]))


def test_describe_eif_not_an_eif_is_e35(nd_home: Path) -> None:
    # lib.rs:224 EifReader::from_eif reads and hashes every section: junk, a truncated EIF and a folder
    # (opened, then unreadable) all fail there -> EifParsingError
    junk = nd_home / "junk.eif"
    junk.write_bytes(b"\x00" * 600)
    whole = build(nd_home, "true", "whole").read_bytes()
    truncated = nd_home / "truncated.eif"
    truncated.write_bytes(whole[: len(whole) - 100])
    folder = nd_home / "folder.eif"
    folder.mkdir()
    for path in (junk, truncated, folder):
        res = emu("describe-eif", "--eif-path", str(path))
        assert (res.returncode, res.stdout) == (35, ""), path
        assert_stderr(res, block("E35", T.DETAIL["E35"]))


def test_sign_eif_missing_eif_is_e60(nd_home: Path) -> None:
    # lib.rs:316 signer.sign_image fails -> EIFSigningError
    from tests.test_emulator_images import signing_pair

    cert, key = signing_pair(nd_home)
    res = emu("sign-eif", "--eif-path", str(nd_home / "absent.eif"), "--signing-certificate", str(cert), "--private-key", str(key))
    assert (res.returncode, res.stdout) == (60, "")
    assert_stderr(res, block("E60", T.DETAIL["E60"]))


def test_terminate_unknown_id_is_e11(nd_home: Path) -> None:
    # main.rs:156 enclave_proc_connect_to_single fails to connect -> SocketError
    res = emu("terminate-enclave", "--enclave-id", "i-0123456789abcdef0-enc0000000000000001")
    assert (res.returncode, res.stdout) == (11, "")
    assert_stderr(res, block("E11", T.DETAIL["E11"]))


def test_terminate_unknown_name_is_e58(nd_home: Path) -> None:
    # lib.rs:541 get_id_by_name: no match -> EnclaveNamingError
    res = emu("terminate-enclave", "--enclave-name", "nobody")
    assert (res.returncode, res.stdout) == (58, "")
    assert_stderr(res, block("E58", T.DETAIL["E58"]))


def test_run_memory_not_an_integer_is_e03(nd_home: Path) -> None:
    # commands_parser.rs parse_memory -> InvalidArgument with ["memory", value]
    res = emu("run-enclave", "--cpu-count", "2", "--memory", "256_mb", "--eif-path", "x.eif")
    assert (res.returncode, res.stdout) == (3, "")
    assert_stderr(res, block("E03", fill(T.DETAIL["E03"], "memory", "256_mb")))


def test_run_parent_cid_is_e03_missing_info(nd_home: Path) -> None:
    # commands_parser.rs parse_enclave_cid: the CID errors carry no info -> MISSING_INFO twice
    res = emu("run-enclave", "--cpu-count", "2", "--memory", "64", "--eif-path", "x.eif", "--enclave-cid", "3")
    assert (res.returncode, res.stdout) == (3, "")
    assert_stderr(res, block("E03", fill(T.DETAIL["E03"])))


def test_console_disconnect_timeout_not_a_number_is_e03(nd_home: Path) -> None:
    # commands_parser.rs:466 parse_disconnect_timeout -> InvalidArgument ["disconnect-timeout", arg]
    res = emu("console", "--enclave-id", "i-1-enc1", "--disconnect-timeout", "soon")
    assert (res.returncode, res.stdout) == (3, "")
    assert_stderr(res, block("E03", fill(T.DETAIL["E03"], "disconnect-timeout", "soon")))


# --- usage errors: clap's layout --------------------------------------------------------------------

CLAP_FOOTER = "For more information, try '--help'."


def clap_error(res: subprocess.CompletedProcess[str], what: str, usage_prefix: str) -> None:
    """clap 4.5: ``error: ...``, a blank line, ``Usage: ...``, a blank line, the footer; exit 2."""
    assert (res.returncode, res.stdout) == (2, "")
    head, usage, footer = res.stderr.split("\n\n")
    assert head == f"error: {what}"
    assert usage.startswith(f"Usage: {usage_prefix}")  # the usage line itself is approximated (docs/emulator.md)
    assert footer == CLAP_FOOTER + "\n"
    assert "[ E" not in res.stderr


def test_usage_missing_required_arguments(nd_home: Path) -> None:
    res = emu("run-enclave", "--cpu-count", "2", "--memory", "64")
    clap_error(res, "the following required arguments were not provided:\n  --eif-path <eif-path>", "nitro-cli run-enclave")


def test_usage_conflicting_arguments(nd_home: Path) -> None:
    res = emu("run-enclave", "--cpu-ids", "1", "--cpu-count", "2", "--memory", "64", "--eif-path", "x")
    clap_error(res, "the argument '--cpu-ids <cpu-ids>...' cannot be used with '--cpu-count <cpu-count>'",
               "nitro-cli run-enclave")


def test_usage_unknown_argument_and_subcommand(nd_home: Path) -> None:
    clap_error(emu("describe-enclaves", "--all"), "unexpected argument '--all' found", "nitro-cli describe-enclaves")
    clap_error(emu("start-enclave"), "unrecognized subcommand 'start-enclave'", "nitro-cli")


def test_usage_missing_value(nd_home: Path) -> None:
    clap_error(emu("describe-eif", "--eif-path"), "a value is required for '--eif-path <eif-path>' but none was supplied",
               "nitro-cli describe-eif")


# --- run-enclave ------------------------------------------------------------------------------------


def configure(home: Path, allocator: str = "---\nmemory_mib: 512\ncpu_count: 4\n") -> None:
    """A 4-core, 2-thread instance (CPU n and n+4 are siblings); the allocator starts on first use."""
    (home / "emulator" / "etc").mkdir(parents=True, exist_ok=True)
    (home / "emulator" / "etc" / "allocator.yaml").write_text(allocator)
    (home / "emulator" / "instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 8\ncores: 4\nthreads_per_core: 2\n"
    )


@pytest.fixture
def sleeper(nd_home: Path) -> Path:
    configure(nd_home)
    return build(nd_home, "echo up\nexec sleep 300", "sleeper")


def run(eif: Path, *extra: str, memory: str = "64") -> subprocess.CompletedProcess[str]:
    return emu("run-enclave", "--eif-path", str(eif), "--memory", memory, *extra)


def wrapped(inner: str) -> str:
    """A failure inside the enclave process: its block, ``Failed connections: 1``, then E39 (exit 39)."""
    return inner + re.escape("Failed connections: 1\n") + block("E39", T.DETAIL["E39"])


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def test_run_missing_eif_is_e19_with_file_line_wrapped(nd_home: Path) -> None:
    # enclave_proc/commands.rs:52 File::open -> FileOperationFailure with [eif_path, "Open"]
    configure(nd_home)
    path = str(nd_home / "absent.eif")
    res = run(Path(path), "--cpu-count", "2")
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, wrapped(block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, path, "Open"))))


def test_run_memory_zero_is_e26_with_the_minimum(nd_home: Path, sleeper: Path) -> None:
    # resource_manager.rs:487: 4 * eif_size > memory in bytes -> E26 with the minimum in MB, also for 0
    need = ceil_div(ceil_div(sleeper.stat().st_size, 1024), 1024) * 4
    res = run(sleeper, "--cpu-count", "2", memory="0")
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, wrapped(block("E26", fill(T.DETAIL["E26"], "memory", "0", str(need)))))


def test_run_four_times_eif_size_is_counted_in_bytes(nd_home: Path, sleeper: Path) -> None:
    """The least memory that holds 4x the EIF in bytes passes the E26 check even when it is below
    4 x the EIF size rounded up to whole MiB; here it then meets the driver's 64 MiB minimum (E29)."""
    size = sleeper.stat().st_size
    least = ceil_div(4 * size, 1024 * 1024)
    assert least < ceil_div(size, 1024 * 1024) * 4 and least < 64  # the case the MiB rounding got wrong
    res = run(sleeper, "--cpu-count", "2", memory=str(least))
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, re.escape("Start allocating memory...\n") + wrapped(block("E29", T.DETAIL["E29"])))
    short = run(sleeper, "--cpu-count", "2", memory=str(least - 1))
    assert first_block_code(short) == "E26"


def first_block_code(res: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"^\[ (E\d\d) \]", res.stderr, re.MULTILINE)
    return m.group(1) if m else ""


def test_run_cpu_checks_come_before_the_memory_check(nd_home: Path, sleeper: Path) -> None:
    # commands.rs:60 get_cpu_config runs before EnclaveManager::new (E26): E22 wins over E26
    res = run(sleeper, "--cpu-count", "6", memory="0")
    assert_stderr(res, wrapped(block("E22", fill(T.DETAIL["E22"], "cpu-count", "6"))))


def test_run_duplicate_cpu_ids_are_listed_without_separator(nd_home: Path, sleeper: Path) -> None:
    # cpu_info.rs get_duplicate_cpus pushes each duplicated ID with nothing between them
    res = run(sleeper, "--cpu-ids", "1", "2", "1", "2")
    assert_stderr(res, wrapped(block("E20", fill(T.DETAIL["E20"], "cpu-ids", "12"))))


def test_run_cpu_not_in_pool_is_e21(nd_home: Path, sleeper: Path) -> None:
    # cpu_info.rs check_cpu_ids: the lowest ID not in the pool file
    res = run(sleeper, "--cpu-ids", "7", "3")
    assert_stderr(res, wrapped(block("E21", fill(T.DETAIL["E21"], "cpu-ids", "3"))))


def test_run_cpu_ids_in_the_drivers_order(nd_home: Path, sleeper: Path) -> None:
    """ne_misc_dev.c: with a count, a core's siblings first, cores in pool order; --cpu-ids as given."""
    first = run(sleeper, "--cpu-count", "4")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["CPUIDs"] == [1, 5, 2, 6]
    assert first.stderr.endswith("cpu-ids: [1, 5, 2, 6]\n")
    assert emu("terminate-enclave", "--all").returncode == 0
    given = run(sleeper, "--cpu-ids", "6", "2")
    assert json.loads(given.stdout)["CPUIDs"] == [6, 2]
    assert emu("terminate-enclave", "--all").returncode == 0


def test_run_exhausted_pool_fails_at_create_vm(nd_home: Path, sleeper: Path) -> None:
    """ne_create_vm_ioctl: no core left in the pool is NO_CPUS_AVAIL_IN_POOL, an E29 before any memory
    is allocated: no "Start allocating memory..." line."""
    assert run(sleeper, "--cpu-count", "4").returncode == 0
    res = run(sleeper, "--cpu-count", "2")
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, wrapped(block("E29", T.DETAIL["E29"])))
    assert emu("terminate-enclave", "--all").returncode == 0


def test_terminate_by_the_part_after_enc(nd_home: Path, sleeper: Path) -> None:
    # common/mod.rs:543 get_socket_path: rsplit("-enc"), the first token names the socket
    info = json.loads(run(sleeper, "--cpu-count", "2").stdout)
    slot = info["EnclaveID"].rsplit("-enc", 1)[1]
    res = emu("terminate-enclave", "--enclave-id", f"i-anything-enc{slot}")
    assert res.returncode == 0, res.stderr
    assert res.stderr == f"Successfully terminated enclave {info['EnclaveID']}.\n"
    assert json.loads(res.stdout) == {"EnclaveName": "sleeper", "EnclaveID": info["EnclaveID"], "Terminated": True}


def test_non_debug_enclave_keeps_no_console(nd_home: Path, sleeper: Path) -> None:
    info = json.loads(run(sleeper, "--cpu-count", "2").stdout)
    console_dir = nd_home / "emulator" / "console"
    assert not (console_dir / f"{info['EnclaveID']}.log").exists()
    assert emu("terminate-enclave", "--all").returncode == 0


def test_console_disconnect_timeout_zero_never_disconnects(nd_home: Path) -> None:
    # utils.rs Console::read_to arms a timerfd with the timeout: 0 disarms it
    configure(nd_home)
    eif = build(nd_home, "while true; do echo tick; sleep 0.2; done", "ticker")
    info = json.loads(run(eif, "--cpu-count", "2", "--debug-mode").stdout)
    con = subprocess.Popen(
        [sys.executable, "-m", "emulator", "console", "--enclave-id", info["EnclaveID"], "--disconnect-timeout", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    try:
        assert con.stdout is not None
        lines = [con.stdout.readline() for _ in range(8)]  # 1.6 s of ticks and more: still connected
        assert lines[:2] == [f"Connecting to the console for enclave {info['EnclaveCID']}...\n".encode(),
                             b"Successfully connected to the console.\n"]
        assert b"tick\n" in lines and con.poll() is None
        assert emu("terminate-enclave", "--all").returncode == 0
        assert con.wait(timeout=30) == 0
    finally:
        if con.poll() is None:
            con.kill()
            con.wait()


def test_attestation_module_id_has_sixteen_hex_digits() -> None:
    from emulator.supervisor import module_id

    assert module_id("i-0123456789abcdef0-enc19a9dcbb3a08a0c") == "i-0123456789abcdef0-enc019a9dcbb3a08a0c"
    assert module_id("i-0123456789abcdef0-enc1") == "i-0123456789abcdef0-enc0000000000000001"


def test_describe_eif_issuer_name_keys_sorted(nd_home: Path) -> None:
    """image-format's SignCertificateInfo keeps IssuerName in a BTreeMap: keys sorted, whatever the
    certificate's order."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.COMMON_NAME, "signer"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = nd_home / "c.pem", nd_home / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    eif = build(nd_home, "true", "signed", "--signing-certificate", str(cert_path), "--private-key", str(key_path))
    issuer = json.loads(emu("describe-eif", "--eif-path", str(eif)).stdout)["SigningCertificate"]["IssuerName"]
    assert list(issuer) == ["commonName", "countryName", "organizationName", "stateOrProvinceName"]


def test_build_output_that_cannot_be_created_is_e19_with_file_line(nd_home: Path) -> None:
    # lib.rs build_enclaves prints "Start building..." first; build_from_docker opens the output file
    # before anything is built: FileOperationFailure with [output, "Open"]
    rootfs = nd_home / "root"
    rootfs.mkdir()
    out = str(nd_home / "absent" / "x.eif")
    res = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "true", "--output-file", out)
    assert (res.returncode, res.stdout) == (19, "")
    assert_stderr(
        res,
        re.escape("Start building the Enclave Image...\n")
        + block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, out, "Open")),
    )


def test_build_docker_dir_without_an_engine_is_e49(nd_home: Path) -> None:
    # lib.rs build_from_docker: with --docker-dir the engine is first used by build_docker_image, whose
    # failure is DockerImageBuildError
    import os

    folder = nd_home / "ctx"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")
    env = dict(os.environ, DOCKER_HOST=f"unix://{nd_home}/no-docker.sock")
    res = subprocess.run(
        [sys.executable, "-m", "emulator", "build-enclave", "--docker-uri", "app:1", "--docker-dir", str(folder),
         "--output-file", str(nd_home / "app.eif")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert (res.returncode, res.stdout) == (49, "")
    assert_stderr(res, re.escape("Start building the Enclave Image...\n") + block("E49", T.DETAIL["E49"]))


def test_every_row_of_the_conformance_table_names_an_existing_test() -> None:
    """docs/emulator.md: no row of the conformance table without a test, and every test it names exists."""
    doc = (REPO / "docs" / "emulator.md").read_text()
    table = doc.split("## Conformance table")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| command /")]
    assert len(rows) >= 30
    for row in rows:
        cell = row.rstrip(" |").rsplit("|", 1)[-1]
        names = re.findall(r"`(conf::|[\w/]+\.py::)(test_\w+)`", cell)
        assert names, f"row without a test: {row}"
        for where, name in names:
            path = Path(__file__) if where == "conf::" else REPO / "tests" / where[:-2]
            assert f"def {name}(" in path.read_text(), f"{where}{name} does not exist"


def test_run_config_cid_is_checked_by_the_driver_not_the_cli(nd_home: Path, sleeper: Path) -> None:
    """commands_parser.rs takes --config's enclave_cid as it is (no CLI-side checks, no "auto-generated"
    line); NE_START_ENCLAVE then refuses the parent's CID: E29 after "Start allocating memory..."."""
    config = nd_home / "run.json"
    config.write_text(json.dumps({"eif_path": str(sleeper), "memory_mib": 64, "cpu_count": 2, "enclave_cid": 3}))
    res = emu("run-enclave", "--config", str(config))
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, re.escape("Start allocating memory...\n") + wrapped(block("E29", T.DETAIL["E29"])))
    config.write_text(json.dumps({"eif_path": str(sleeper), "memory_mib": 64, "cpu_count": 2, "enclave_cid": 0}))
    ok = emu("run-enclave", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "auto-generated" not in ok.stderr
    assert emu("terminate-enclave", "--all").returncode == 0


# --- argument values as Rust's str::parse reads them ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        # commands_parser.rs:508 parse_cpu_count: u32 (a leading + is Rust's, a space or 2^32 is not)
        (["--cpu-count", "+2"], None),
        (["--cpu-count", "4294967296"], ("cpu-count", "4294967296")),
        (["--cpu-count", " 2"], ("cpu-count", " 2")),
        # commands_parser.rs:491 parse_cpu_ids: each ID a u32, named "cpu-id" in the block
        (["--cpu-ids", "1", "x"], ("cpu-id", "x")),
        (["--cpu-ids", "1", "4294967296"], ("cpu-id", "4294967296")),
        # commands_parser.rs:387 parse_enclave_cid: a u64 first (the CID rules come after)
        (["--cpu-count", "2", "--enclave-cid", "+5"], None),
        (["--cpu-count", "2", "--enclave-cid", "99999999999999999999"], ("enclave-cid", "99999999999999999999")),
    ],
)
def test_run_integer_arguments_parse_as_rust_does(nd_home: Path, args: list[str], refused: tuple[str, str] | None) -> None:
    """A value Rust's parse() takes gets past the arguments (here to the EIF open: E19, wrapped); one it
    refuses is E03 with the argument's name and the value, exit 3."""
    path = str(nd_home / "absent.eif")
    res = emu("run-enclave", *args, "--memory", "64", "--eif-path", path)
    assert res.stdout == ""
    if refused is None:
        assert res.returncode == 39
        assert_stderr(res, wrapped(block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, path, "Open"))))
    else:
        assert res.returncode == 3
        assert_stderr(res, block("E03", fill(T.DETAIL["E03"], *refused)))


@pytest.mark.parametrize(("memory", "accepted"), [("064", True), ("1G", True), ("2t", True), (" 64", False),
                                                  ("+64", False), ("64 ", False), ("64MB", False), ("٦٤", False)])
def test_run_memory_parses_as_rust_does(nd_home: Path, memory: str, accepted: bool) -> None:
    """commands_parser.rs:339 parse_memory: the number is what comes before the first non-numeric
    character and must parse as a u64; the rest must be M/m/G/g/T/t or nothing (:356, :364)."""
    path = str(nd_home / "absent.eif")
    res = emu("run-enclave", "--cpu-count", "2", "--memory", memory, "--eif-path", path)
    if accepted:
        assert_stderr(res, wrapped(block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, path, "Open"))))
    else:
        assert res.returncode == 3
        assert_stderr(res, block("E03", fill(T.DETAIL["E03"], "memory", memory)))


def test_run_huge_memory_wraps_as_a_u64(nd_home: Path, sleeper: Path) -> None:
    """resource_manager.rs:477 requested_mem = memory_mib << 20 in a u64: 9999999999999 MiB still fits
    and fails the allocation (E27 after "Start allocating memory...", :404/:647); 2^44 MiB wraps to
    0 bytes and fails the 4x EIF size rule (E26 with the value as given, :487)."""
    res = run(sleeper, "--cpu-count", "2", memory="9999999999999")
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, re.escape("Start allocating memory...\n")
                  + wrapped(block("E27", fill(T.DETAIL["E27"], "memory", "9999999999999"))))
    need = ceil_div(ceil_div(sleeper.stat().st_size, 1024), 1024) * 4
    res = run(sleeper, "--cpu-count", "2", memory=str(1 << 44))
    assert_stderr(res, wrapped(block("E26", fill(T.DETAIL["E26"], "memory", str(1 << 44), str(need)))))


def test_run_empty_eif_without_memory_is_e26_without_a_minimum(nd_home: Path) -> None:
    """An empty EIF passes the 4x rule even with --memory 0 (resource_manager.rs:487, 4 * 0 > 0 is
    false); ResourceAllocator::new then refuses no memory (:331): E26 with two values."""
    configure(nd_home)
    empty = nd_home / "empty.eif"
    empty.write_bytes(b"")
    res = run(empty, "--cpu-count", "2", memory="0")
    assert (res.returncode, res.stdout) == (39, "")
    assert_stderr(res, wrapped(block("E26", fill(T.DETAIL_E26_ZERO, "memory", "0"))))


def test_run_eif_whose_headers_cannot_be_read_is_e59_before_allocating(nd_home: Path) -> None:
    """commands.rs:87 PcrSignatureChecker::from_eif runs after NE_CREATE_VM and before any memory is
    allocated; it reads the 548-byte header, then the section headers one after the other. A file too
    short for the header, a folder (File::open opens it; reading fails) and an unknown section type
    fail it: E59, wrapped, no "Start allocating memory..."."""
    configure(nd_home)
    tiny = nd_home / "tiny.eif"
    tiny.write_bytes(b"\x00" * 100)
    folder = nd_home / "folder.eif"
    folder.mkdir()
    unknown = nd_home / "unknown.eif"
    unknown.write_bytes(b"\x00" * 548 + bytes([0, 9, 0, 0]) + b"\x00" * 8)
    for eif in (tiny, folder, unknown):
        res = run(eif, "--cpu-count", "2")
        assert (res.returncode, res.stdout) == (39, ""), eif
        assert_stderr(res, wrapped(block("E59", T.DETAIL["E59"])))
    # headers that walk (empty sections of a known type) pass the checker: the emulator then cannot
    # load what it must parse itself (docs/emulator.md, known differences)
    zeros = nd_home / "zeros.eif"
    zeros.write_bytes(b"\x00" * 600)
    res = run(zeros, "--cpu-count", "2")
    assert res.stderr.startswith("Start allocating memory...\nnitro-emu: the EIF cannot be read: ")
    assert first_block_code(res) == "E35"


def test_sign_eif_argument_rules(nd_home: Path) -> None:
    """lib.rs:865 create_app!: no sign-eif argument is required; the certificate and the key require
    each other (clap). commands_parser.rs:280 SignEifArgs::new_with: no --eif-path is E01 with no
    parameter (exit 1); lib.rs sign_eif: no key data is E60 (EifSigner::new gives None)."""
    res = emu("sign-eif")
    assert (res.returncode, res.stdout) == (1, "")
    assert_stderr(res, block("E01", fill(T.DETAIL["E01"])))
    res = emu("sign-eif", "--eif-path", str(nd_home / "x.eif"))
    assert (res.returncode, res.stdout) == (60, "")
    assert_stderr(res, block("E60", T.DETAIL["E60"]))
    clap_error(emu("sign-eif", "--eif-path", "x.eif", "--signing-certificate", "c.pem"),
               "the following required arguments were not provided:\n  --private-key <private-key>",
               "nitro-cli sign-eif")


def test_console_name_is_looked_up_before_the_timeout(nd_home: Path) -> None:
    # commands_parser.rs:189 ConsoleArgs::new_with: get_id_by_name (E58) before parse_disconnect_timeout
    res = emu("console", "--enclave-name", "nobody", "--disconnect-timeout", "soon")
    assert (res.returncode, res.stdout) == (58, "")
    assert_stderr(res, block("E58", T.DETAIL["E58"]))


def test_backtrace_variable_prints_the_backtrace(nd_home: Path) -> None:
    """common/mod.rs:366: with BACKTRACE=1 the block carries the err log's text (document_errors.rs:357
    construct_backtrace) between the help link and the log line."""
    import os

    env = dict(os.environ, BACKTRACE="1")
    res = subprocess.run([sys.executable, "-m", "emulator", "pcr", "--input", str(nd_home / "absent")],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert res.returncode == 19
    m = re.fullmatch(
        re.escape(f"[ E19 ] {T.DETAIL['E19']}\n\nFor more details, please visit {HELP.format('E19')}\n\nBacktrace:\n")
        + r"(  Action: .+\n  Subactions:(?:\n    .+)+\n  Root error file: .+\n  Root error line: \d+\n  Version: 1\.5\.0)"
        + re.escape('\n\nIf you open a support ticket, please provide the error log found at "')
        + "(" + LOG_PATH + ")" + re.escape('"\n'),
        res.stderr,
    )
    assert m, res.stderr
    assert Path(m.group(2)).read_text() == m.group(1)


def test_emulator_only_notes_go_to_stderr(nd_home: Path) -> None:
    """nitro-emu restart-allocator prints the allocator script's lines on stdout, as the script does;
    the driver's refusal of a CPU pool (kernel log on Nitro) is the emulator's own note: stderr only,
    one line starting with `nitro-emu:`."""
    configure(nd_home, "---\nmemory_mib: 512\ncpu_pool: 1\n")
    res = emu("restart-allocator")
    assert res.returncode == 1
    assert "nitro-emu" not in res.stdout
    assert res.stdout.splitlines()[-1] == "Error: Failed to configure the CPU pool."
    assert res.stderr.startswith("nitro-emu: the driver refused the CPU pool '1': ") and res.stderr.count("\n") == 1


def test_run_config_that_is_a_folder_is_e17(nd_home: Path) -> None:
    # commands_parser.rs:46 File::open opens a folder; :54 serde_json::from_reader fails -> SerdeError
    res = emu("run-enclave", "--config", str(nd_home))
    assert (res.returncode, res.stdout) == (17, "")
    assert_stderr(res, block("E17", T.DETAIL["E17"]))
    # a config file that does not exist cannot be opened: E19 with its file line (:51)
    absent = str(nd_home / "absent.json")
    res = emu("run-enclave", "--config", absent)
    assert (res.returncode, res.stdout) == (19, "")
    assert_stderr(res, block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, absent, "Open")))


def test_run_empty_enclave_name_is_kept(nd_home: Path, sleeper: Path) -> None:
    # lib.rs new_enclave_name: Some("") is the name (only None falls back to the EIF's file name)
    res = run(sleeper, "--cpu-count", "2", "--enclave-name", "")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["EnclaveName"] == ""
    again = run(sleeper, "--cpu-count", "2", "--enclave-name", "")
    assert json.loads(again.stdout)["EnclaveName"] == "_1"
    assert emu("terminate-enclave", "--all").returncode == 0


def test_usage_value_that_starts_with_a_hyphen(nd_home: Path) -> None:
    """clap (parser.rs parse_short_arg): a token after an option that starts with '-' is a flag, a
    negative number too; one clap does not know is named, a short one by its first character. With '='
    the value is attached and reaches nitro-cli's own check (E03)."""
    clap_error(emu("run-enclave", "--cpu-count", "-1", "--memory", "64", "--eif-path", "x.eif"),
               "unexpected argument '-1' found", "nitro-cli run-enclave")
    clap_error(emu("run-enclave", "--cpu-ids", "1", "-2", "--memory", "64", "--eif-path", "x.eif"),
               "unexpected argument '-2' found", "nitro-cli run-enclave")
    clap_error(emu("terminate-enclave", "--enclave-id", "-enc1"), "unexpected argument '-e' found",
               "nitro-cli terminate-enclave")
    clap_error(emu("describe-eif", "--eif-path", "--memory"), "unexpected argument '--memory' found",
               "nitro-cli describe-eif")
    res = emu("run-enclave", "--cpu-count=-1", "--memory", "64", "--eif-path", "x.eif")
    assert (res.returncode, res.stdout) == (3, "")
    assert_stderr(res, block("E03", fill(T.DETAIL["E03"], "cpu-count", "-1")))


def test_build_blobs_folder_without_cmdline_is_e19(nd_home: Path) -> None:
    """lib.rs build_from_docker opens "{blobs_path}/cmdline" first (E19 with the file and 'Open'), then
    reads it ('Read': a folder opens, its read fails), before the output file or Docker."""
    import os

    rootfs = nd_home / "root"
    rootfs.mkdir()
    out = str(nd_home / "x.eif")
    folder = nd_home / "blobs"
    (folder / "cmdline").mkdir(parents=True)
    for blobs, path, operation in ((f"{nd_home}/none/", f"{nd_home}/none//cmdline", "Open"),
                                   (str(folder), f"{folder}/cmdline", "Read")):
        res = subprocess.run(
            [sys.executable, "-m", "emulator", "build-enclave", "--rootfs", str(rootfs), "--cmd", "true",
             "--output-file", out],
            capture_output=True, text=True, cwd=REPO, env=dict(os.environ, NITRO_CLI_BLOBS=blobs), timeout=120,
        )
        assert (res.returncode, res.stdout) == (19, "")
        assert_stderr(res, re.escape("Start building the Enclave Image...\n")
                      + block("E19", T.DETAIL["E19"] + fill(T.DETAIL_E19_FILE, path, operation)))
        assert not Path(out).exists()


def test_usage_argument_given_twice_and_several_conflicts(nd_home: Path) -> None:
    """clap: every nitro-cli argument is ArgAction::Set or SetTrue, so one given twice is "cannot be used
    multiple times" (parser.rs react); conflicts name the first argument given that has any, then
    every argument it conflicts with, in the order given (validator.rs validate_conflicts)."""
    clap_error(emu("run-enclave", "--memory", "64", "--memory", "128", "--cpu-count", "2", "--eif-path", "x"),
               "the argument '--memory <memory>' cannot be used multiple times", "nitro-cli run-enclave")
    clap_error(emu("terminate-enclave", "--all", "--all"), "the argument '--all' cannot be used multiple times",
               "nitro-cli terminate-enclave")
    clap_error(emu("run-enclave", "--memory", "64", "--config", "c.json"),
               "the argument '--memory <memory>' cannot be used with '--config <json-config>'", "nitro-cli run-enclave")
    clap_error(emu("run-enclave", "--config", "c.json", "--memory", "64", "--eif-path", "x"),
               "the argument '--config <json-config>' cannot be used with:\n  --memory <memory>\n  --eif-path <eif-path>",
               "nitro-cli run-enclave")
    # a value missing comes first (the second --memory ends the first one)
    clap_error(emu("run-enclave", "--memory", "--memory", "5"),
               "a value is required for '--memory <memory>' but none was supplied", "nitro-cli run-enclave")
