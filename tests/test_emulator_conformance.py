"""nitro-emu against nitro-cli 1.5.0, byte for byte: one test per row of docs/emulator.md's table.

The expected texts come from tests/nitro_cli_texts.py (nitro-cli's source, file and line cited there);
nothing here is read back from emulator/ to build an expectation. Only an err log's path, which holds
the time, is matched by pattern.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import nitro_cli_texts as T

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
    junk = nd_home / "junk.eif"
    junk.write_bytes(b"\x00" * 600)
    res = emu("describe-eif", "--eif-path", str(junk))
    assert (res.returncode, res.stdout) == (35, "")
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
