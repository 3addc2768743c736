"""core.backends.driver against nitro-cli's real transcripts (reference §2-3), replayed by a fake executable.

The fake nitro-cli below is a mock at the process boundary, on purpose: real nitro-cli cannot run on
this machine, and timeouts, exit codes, huge outputs and daemonized children that keep our pipes
open need a program that misbehaves on request. The emulator end to end is in test_e2e_emulator.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.backends.base import Backend
from core.backends.driver import (
    BackendUnavailable,
    CommandFailed,
    CommandRecord,
    DriverTimeout,
    NitroCli,
    build_args,
)
from core.errors import InputTooLarge, NitroCliError, UsageError
from core.models import BuildRequest, LaunchRequest, OutputFormatError
from tests.conftest import wait_for

FAKE = r'''
import json, os, subprocess, sys, time
scenario = json.load(open(os.environ["FAKE_NITRO_SCENARIO"]))
key = sys.argv[1] if len(sys.argv) > 1 else ""
if key == "terminate-enclave" and "--all" in sys.argv:
    key = "terminate-all"
step = scenario.get(key, {"stderr": "no scenario\n", "exit": 2})
with open(os.environ["FAKE_NITRO_SCENARIO"] + ".argv", "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
if step.get("grandchild"):
    # a helper that inherits our stdout/stderr, like a daemonized enclave process that forgot to close them
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(step["grandchild"], "w").write(str(child.pid))
sys.stderr.write(step.get("stderr", ""))
sys.stderr.flush()
if step.get("flood"):
    chunk = "x" * 65536
    for _ in range(step["flood"]):
        sys.stdout.write(chunk)
for line in step.get("lines", []):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
sys.stdout.write(step.get("stdout", ""))
sys.stdout.flush()
time.sleep(step.get("sleep", 0))
sys.exit(step.get("exit", 0))
'''

ENCLAVE_ID = "i-078485c44ae5a4c2e-enc199b46fe989c74b"
PCR0 = "d5182754070779a5909ce4b83b967f6173dec9a7a679bdd4fc5ecf2627bd8d9761eb7ccf518826bde8bb584ff4f62fae"
PCR1 = "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa"
PCR2 = "2f8e4a26a68d59d294c3eaf405be652637c62c4ae6ee87c272a9118e933c23f1ccaef2b122b65df838a707caf641ce17"

DESCRIBE = f"""[
  {{
    "EnclaveName": "nginx",
    "EnclaveID": "{ENCLAVE_ID}",
    "ProcessID": 38507,
    "EnclaveCID": 16,
    "NumberOfCPUs": 2,
    "CPUIDs": [
      1,
      3
    ],
    "MemoryMiB": 1024,
    "State": "RUNNING",
    "Flags": "DEBUG_MODE",
    "Measurements": {{
      "HashAlgorithm": "Sha384 {{ ... }}",
      "PCR0": "{PCR0}",
      "PCR1": "{PCR1}",
      "PCR2": "{PCR2}"
    }}
  }}
]
"""

RUN_STDOUT = """{
  "EnclaveName": "my_enclave",
  "EnclaveID": "i-abc12345def67890a-enc9876abcd543210ef12",
  "ProcessID": 12345,
  "EnclaveCID": 10,
  "NumberOfCPUs": 2,
  "CPUIDs": [
    1,
    3
  ],
  "MemoryMiB": 1600
}
"""
RUN_STDERR = "Start allocating memory...\nStarted enclave with enclave-cid: 10, memory: 1600 MiB, cpu-ids: [1, 3]\n"

TERMINATE = f'{{\n  "EnclaveName": "nginx",\n  "EnclaveID": "{ENCLAVE_ID}",\n  "Terminated": true\n}}\n'

E26 = (
    "[ E26 ] Insufficient memory requested. User provided `memory` is 512 MB, but based on the EIF file size, "
    "the minimum memory should be 2148 MB\n\n"
    "For more details, please visit https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E26\n\n"
    'If you open a support ticket, please provide the error log found at '
    '"/var/log/nitro_enclaves/err2021-06-18T21:46:43.249503129+00:00.log"\n'
)

E27_WRAPPED = (
    "Start allocating memory...\n"
    "[ E27 ] Insufficient memory available. User provided `memory` is 4096 MB, which is more than the "
    "available hugepage memory.\nYou can increase the available memory by editing the `memory_mib` value from "
    "'/etc/nitro_enclaves/allocator.yaml' and then restart the nitro-enclaves-allocator.service.\n\n"
    "For more details, please visit https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E27\n\n"
    'If you open a support ticket, please provide the error log found at '
    '"/var/log/nitro_enclaves/err2026-01-01T00:00:00.000000001+00:00.log"\n'
    "Failed connections: 1\n"
    "[ E39 ] Enclave process connection failure. Failed to connect to the enclave process.\n\n"
    "For more details, please visit https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E39\n\n"
    'If you open a support ticket, please provide the error log found at '
    '"/var/log/nitro_enclaves/err2026-01-01T00:00:00.000000002+00:00.log"\n'
)

DESCRIBE_EIF = json.dumps(
    {
        "EifVersion": 4,
        "Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0.upper(), "PCR1": PCR1, "PCR2": PCR2},
        "IsSigned": False,
        "CheckCRC": True,
        "ImageName": "payments-app",
        "ImageVersion": "5d5eab01",
        "Metadata": {"BuildTool": "nitro-cli", "BuildToolVersion": "1.4.2"},
    },
    indent=2,
)


class Fake:
    def __init__(self, tmp: Path) -> None:
        self.script = tmp / "fake_nitro_cli.py"
        self.script.write_text(FAKE)
        self.scenario = tmp / "scenario.json"
        self.records: list[CommandRecord] = []

    def backend(self, name: str = "real") -> Backend:
        display = "nitro-cli" if name == "real" else "nitro-emu"
        return Backend(name, (sys.executable, str(self.script)), display, None)

    def driver(self, steps: dict[str, Any], name: str = "real", timeout: float = 30.0) -> NitroCli:
        self.scenario.write_text(json.dumps(steps))
        return NitroCli(self.backend(name), timeout=timeout, on_command=self.records.append)

    def calls(self) -> list[list[str]]:
        path = Path(str(self.scenario) + ".argv")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake(tmp_path)
    monkeypatch.setenv("FAKE_NITRO_SCENARIO", str(f.scenario))
    return f


def test_describe_enclaves_transcript(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"stdout": DESCRIBE}})
    [e] = drv.describe_enclaves()
    assert (e.name, e.enclave_id, e.process_id, e.cid) == ("nginx", ENCLAVE_ID, 38507, 16)
    assert e.cpu_ids == [1, 3] and e.memory_mib == 1024 and e.state == "RUNNING" and e.debug_mode
    assert e.measurements is not None and e.measurements.pcr0 == PCR0
    rec = fake.records[-1]
    assert rec.command == "nitro-cli describe-enclaves" and rec.ok and rec.exit_code == 0


def test_emulator_details_come_from_their_own_command(fake: Fake) -> None:
    """describe-enclaves stays nitro-cli's JSON; the emulator's EIF path and isolation are merged in from
    ``nitro-emu emulator-describe``, and only for the emulator backend."""
    extra = json.dumps([{"EnclaveID": ENCLAVE_ID, "EnclaveName": "nginx", "EifPath": "/e/nginx.eif",
                         "Isolation": {"NetworkNamespace": True}}])
    steps = {"describe-enclaves": {"stdout": DESCRIBE}, "emulator-describe": {"stdout": extra}}
    emu = fake.driver(steps, name="emulator")
    [e] = emu.describe_enclaves()
    assert e.eif_path == "/e/nginx.eif" and e.isolation == {"NetworkNamespace": True}
    assert fake.calls()[-2:] == [["describe-enclaves"], ["emulator-describe"]]
    # they do not change while the enclave runs: asked again only for an enclave new to the driver
    [again] = emu.describe_enclaves()
    assert again.eif_path == "/e/nginx.eif" and fake.calls()[-1] == ["describe-enclaves"]
    [real] = fake.driver(steps).describe_enclaves()
    assert real.eif_path is None and real.isolation is None and fake.calls()[-1] == ["describe-enclaves"]
    # an emulator without the command (or broken output) still describes its enclaves
    broken = {"describe-enclaves": {"stdout": DESCRIBE}, "emulator-describe": {"stdout": "{", "exit": 0}}
    [e] = fake.driver(broken, name="emulator").describe_enclaves()
    assert e.enclave_id == ENCLAVE_ID and e.eif_path is None


def test_describe_empty_and_metadata_flag(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"stdout": "[]\n"}})
    assert drv.describe_enclaves(metadata=True) == []
    assert fake.calls()[-1] == ["describe-enclaves", "--metadata"]


def test_run_enclave_transcript_and_argv(fake: Fake, tmp_path: Path) -> None:
    drv = fake.driver({"run-enclave": {"stdout": RUN_STDOUT, "stderr": RUN_STDERR}})
    info = drv.run_enclave(LaunchRequest(str(tmp_path / "a.eif"), 1600, cpu_ids=[1, 3], cid=10, debug_mode=True,
                                         name="my_enclave"))
    assert (info.enclave_id, info.cid, info.cpu_ids, info.memory_mib) == (
        "i-abc12345def67890a-enc9876abcd543210ef12", 10, [1, 3], 1600)
    assert fake.calls()[-1] == ["run-enclave", "--eif-path", str(tmp_path / "a.eif"), "--memory", "1600",
                                "--cpu-ids", "1", "3", "--enclave-cid", "10", "--debug-mode",
                                "--enclave-name", "my_enclave"]
    assert fake.records[-1].command.startswith("nitro-cli run-enclave --eif-path ")


def test_terminate_single_and_all_forms(fake: Fake) -> None:
    drv = fake.driver({"terminate-enclave": {"stdout": TERMINATE, "stderr": f"Successfully terminated enclave {ENCLAVE_ID}.\n"},
                       "terminate-all": {"stdout": f"[\n{TERMINATE}]\n"}})
    t = drv.terminate(enclave_id=ENCLAVE_ID)
    assert t.terminated and t.name == "nginx"
    assert [x.enclave_id for x in drv.terminate_all()] == [ENCLAVE_ID]
    # the user guide's older bare-object form of --all
    drv = fake.driver({"terminate-all": {"stdout": TERMINATE}})
    assert [x.enclave_id for x in drv.terminate_all()] == [ENCLAVE_ID]
    drv = fake.driver({"terminate-all": {"stdout": "[]\n"}})
    assert drv.terminate_all() == []
    with pytest.raises(UsageError):
        drv.terminate()


def test_describe_eif_build_pcr_version(fake: Fake, tmp_path: Path) -> None:
    meas = json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2}})
    drv = fake.driver({
        "describe-eif": {"stdout": DESCRIBE_EIF},
        "build-enclave": {"stdout": meas, "stderr": "Start building the Enclave Image...\n"},
        "pcr": {"stdout": json.dumps({"PCR8": PCR1.upper()})},
        "--version": {"stdout": "Nitro CLI 1.5.0\n"},
    })
    info = drv.describe_eif("x.eif")
    assert info.measurements.pcr0 == PCR0 and info.image_name == "payments-app" and info.check_crc
    res = drv.build_enclave(BuildRequest(str(tmp_path / "o.eif"), docker_uri="hello:latest", name="n"))
    assert res.measurements.pcr2 == PCR2
    assert fake.calls()[-1] == ["build-enclave", "--docker-uri", "hello:latest", "--output-file",
                                str(tmp_path / "o.eif"), "--name", "n"]
    assert drv.pcr(cert="c.pem") == PCR1
    assert drv.version() == "Nitro CLI 1.5.0"


def test_e26_error_block(fake: Fake) -> None:
    drv = fake.driver({"run-enclave": {"stderr": E26, "exit": 26}})
    with pytest.raises(NitroCliError) as info:
        drv.run_enclave(LaunchRequest("x.eif", 512, cpu_count=2))
    err = info.value
    assert err.code == "E26" and err.exit_status == 26
    assert err.message.startswith("Insufficient memory requested") and "For more details" not in err.message
    assert err.hint is not None and "4x" in err.hint and "2148" in err.hint
    assert err.log_path == "/var/log/nitro_enclaves/err2021-06-18T21:46:43.249503129+00:00.log"
    assert "run-enclave" in err.argv and "512" in err.argv
    rec = fake.records[-1]
    assert not rec.ok and rec.exit_code == 26 and rec.error_code == "E26"
    text = str(err)
    assert "[ E26 ]" in text and "hint:" in text and "error log:" in text


def test_e39_wrapped_reports_inner_code(fake: Fake) -> None:
    drv = fake.driver({"run-enclave": {"stderr": E27_WRAPPED, "exit": 39}})
    with pytest.raises(NitroCliError) as info:
        drv.run_enclave(LaunchRequest("x.eif", 4096, cpu_count=2))
    err = info.value
    assert err.code == "E27" and err.exit_status == 27
    assert "[ E39 ]" in err.stderr
    assert err.log_path is not None and err.log_path.endswith("000000001+00:00.log")
    assert "nitro-enclaves-allocator.service" in (err.hint or "")
    assert "/etc/nitro_enclaves/allocator.yaml" in (err.hint or "")


def test_e27_hint_names_emulator_file(fake: Fake, nd_home: Path) -> None:
    drv = fake.driver({"run-enclave": {"stderr": E27_WRAPPED, "exit": 39}}, name="emulator")
    with pytest.raises(NitroCliError) as info:
        drv.run_enclave(LaunchRequest("x.eif", 4096, cpu_count=2))
    assert str(nd_home / "emulator" / "etc" / "allocator.yaml") in (info.value.hint or "")


@pytest.mark.parametrize("code", ["E22", "E21", "E20", "E11", "E44", "E36", "E19", "E35", "E58", "E48", "E49", "E50"])
def test_every_listed_code_has_a_hint(fake: Fake, code: str) -> None:
    drv = fake.driver({"describe-enclaves": {"stderr": f"[ {code} ] Something failed.\n", "exit": int(code[1:])}})
    with pytest.raises(NitroCliError) as info:
        drv.describe_enclaves()
    assert info.value.code == code and info.value.hint


def test_failure_without_block_keeps_exit_status(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"stderr": "error: unexpected argument '--bogus'\n", "exit": 2}})
    with pytest.raises(CommandFailed) as info:
        drv.describe_enclaves()
    assert info.value.exit_status == 2 and "--bogus" in info.value.message


def test_failure_without_block_names_the_usage_error_not_the_help_footer(fake: Fake) -> None:
    # clap and argparse print the usage, then `error: ...`, then a "For more information" footer
    stderr = "usage: nitro-cli [-h]\n       ...\nerror: --rootfs requires --cmd\n\nFor more information try --help\n"
    drv = fake.driver({"build-enclave": {"stderr": stderr, "exit": 2}})
    with pytest.raises(CommandFailed) as info:
        drv.build_enclave(BuildRequest("o.eif", docker_uri="x:1"))
    assert info.value.exit_status == 2 and "error: --rootfs requires --cmd" in info.value.message


def test_bad_json_is_typed(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"stdout": '[{"EnclaveID": 5}]'}})
    with pytest.raises(Exception) as info:
        drv.describe_enclaves()
    assert getattr(info.value, "code", None) == "ND-OUTPUT"


def test_timeout_kills_the_process_group(fake: Fake, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    drv = fake.driver({"describe-enclaves": {"sleep": 60, "grandchild": str(pidfile)}}, timeout=2)
    with pytest.raises(DriverTimeout) as info:
        drv.describe_enclaves()
    assert "nitro-cli describe-enclaves" in str(info.value)
    pid = int(pidfile.read_text())
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10)
    assert fake.records[-1].exit_code is None and not fake.records[-1].ok


def test_daemonized_child_holding_pipes_does_not_hang(fake: Fake, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    drv = fake.driver({"run-enclave": {"stdout": RUN_STDOUT, "grandchild": str(pidfile)}}, timeout=20)
    try:
        info = drv.run_enclave(LaunchRequest("x.eif", 1600, cpu_count=2))
        assert info.cid == 10
    finally:
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_output_size_limit(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"flood": 300}})  # ~19 MiB
    with pytest.raises(InputTooLarge):
        drv.describe_enclaves()


def test_missing_executable(tmp_path: Path) -> None:
    drv = NitroCli(Backend("real", (str(tmp_path / "nope"),), "nitro-cli"))
    with pytest.raises(BackendUnavailable):
        drv.describe_enclaves()


def test_emulator_only_build_inputs_refused_on_real(fake: Fake) -> None:
    req = BuildRequest("o.eif", rootfs="/tmp/x", cmd="/bin/sh run.sh", env=["A=1"])
    drv = fake.driver({})
    with pytest.raises(UsageError) as info:
        drv.build_enclave(req)
    assert "--rootfs" in info.value.message and "emulator" in info.value.message
    assert fake.records == []  # refused before anything ran
    args = build_args(req, fake.backend("emulator"))
    assert args == ["build-enclave", "--rootfs", "/tmp/x", "--cmd", "/bin/sh run.sh", "--env", "A=1",
                    "--output-file", "o.eif"]
    with pytest.raises(UsageError):
        build_args(BuildRequest("o.eif"), fake.backend("emulator"))
    with pytest.raises(UsageError):
        build_args(BuildRequest("o.eif", docker_uri="a", private_key="k"), fake.backend("real"))


async def test_console_strips_preamble(fake: Fake) -> None:
    drv = fake.driver({"console": {"lines": ["Connecting to the console for enclave 16...",
                                             "Successfully connected to the console.",
                                             "[    0.000000] Linux version 4.14", "hello from the enclave"]}})
    lines = [line async for line in drv.console(ENCLAVE_ID, disconnect_timeout=5)]
    assert lines == ["[    0.000000] Linux version 4.14", "hello from the enclave"]
    assert fake.calls()[-1] == ["console", "--enclave-id", ENCLAVE_ID, "--disconnect-timeout", "5"]
    assert fake.records[-1].ok


async def test_console_error_is_typed(fake: Fake) -> None:
    from tests import nitro_cli_texts as T

    # main.rs:263: a non-debug enclave's console is E44, not wrapped
    drv = fake.driver({"console": {"stderr": _block("E44", T.DETAIL["E44"]), "exit": 44}})
    with pytest.raises(NitroCliError) as info:
        _ = [line async for line in drv.console(ENCLAVE_ID)]
    assert info.value.code == "E44" and "debug" in (info.value.hint or "")


async def test_console_consumer_stop_kills_child(fake: Fake, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    drv = fake.driver({"console": {"lines": ["first line"], "sleep": 60, "grandchild": str(pidfile)}})
    gen = drv.console(ENCLAVE_ID)
    assert await gen.__anext__() == "first line"
    await gen.aclose()
    pid = int(pidfile.read_text())
    await asyncio.to_thread(
        wait_for, lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10
    )


# nitro-cli before 1.2.0 (the user guide's "Hello enclave"): no EnclaveName, no Measurements
OLD_DESCRIBE = f"""[
  {{
    "EnclaveID": "{ENCLAVE_ID}",
    "ProcessID": 7,
    "EnclaveCID": 16,
    "NumberOfCPUs": 2,
    "CPUIDs": [1, 3],
    "MemoryMiB": 512,
    "State": "RUNNING",
    "Flags": "NONE"
  }}
]
"""


def test_older_versions_and_metadata_fields(fake: Fake) -> None:
    drv = fake.driver({"describe-enclaves": {"stdout": OLD_DESCRIBE}})
    [e] = drv.describe_enclaves()
    assert e.name is None and e.measurements is None and e.label == ENCLAVE_ID and not e.debug_mode
    with_meta = json.loads(DESCRIBE)
    with_meta[0].update({"ImageName": "payments-app", "ImageVersion": "5d5eab01",
                         "Metadata": {"BuildTool": "nitro-cli", "DockerInfo": {"Id": "sha256:5d5eab01"}}})
    drv = fake.driver({"describe-enclaves": {"stdout": json.dumps(with_meta, indent=2)}})
    [e] = drv.describe_enclaves(metadata=True)
    assert (e.image_name, e.image_version) == ("payments-app", "5d5eab01")
    assert e.metadata == {"BuildTool": "nitro-cli", "DockerInfo": {"Id": "sha256:5d5eab01"}}


@pytest.mark.parametrize("cpu_ids", [["1"], [1.5], [True], [None], [-1], [2**40]])
def test_cpu_ids_must_be_cpu_numbers(fake: Fake, cpu_ids: list[Any]) -> None:
    bad = json.loads(DESCRIBE)
    bad[0]["CPUIDs"] = cpu_ids
    run = json.loads(RUN_STDOUT)
    run["CPUIDs"] = cpu_ids
    drv = fake.driver({"describe-enclaves": {"stdout": json.dumps(bad)}, "run-enclave": {"stdout": json.dumps(run)}})
    for call in (drv.describe_enclaves, lambda: drv.run_enclave(LaunchRequest("x.eif", 64, cpu_count=2))):
        with pytest.raises(OutputFormatError) as info:
            call()
        assert "CPUIDs" in str(info.value)


# --- the failure paths of issue 11, replayed as nitro-cli 1.5.0 prints them ----------------------------
# The texts come from tests/nitro_cli_texts.py (nitro-cli's source, file and line cited there).


def _block(code: str, text: str, n: int = 1) -> str:
    return (
        f"[ {code} ] {text}\n\nFor more details, please visit "
        f"https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{code}\n\n"
        f'If you open a support ticket, please provide the error log found at '
        f'"/var/log/nitro_enclaves/err2026-01-01T00:00:00.00000000{n}+00:00.log"\n'
    )


def _wrapped(inner: str, allocating: bool = False) -> str:
    from tests import nitro_cli_texts as T

    return ("Start allocating memory...\n" if allocating else "") + inner + "Failed connections: 1\n" + _block(
        "E39", T.DETAIL["E39"], 2
    )


def _fill(template: str, *info: str) -> str:
    parts = template.split("{}")
    return parts[0] + "".join((info[i] if i < len(info) else "MISSING_INFO") + p for i, p in enumerate(parts[1:]))


def _transcripts() -> list[tuple[str, str, int, str, str, str]]:
    """(command, stderr, exit, code, a piece of the parsed message, a piece of the hint)."""
    from tests import nitro_cli_texts as T

    eif = "/home/ec2-user/app.eif"
    return [
        ("run-enclave", _wrapped(_block("E19", T.DETAIL["E19"] + _fill(T.DETAIL_E19_FILE, eif, "Open"))), 39, "E19",
         f"File: '{eif}', failing operation: 'Open'.", "a file could not be opened"),
        ("run-enclave", _wrapped(_block("E26", _fill(T.DETAIL["E26"], "memory", "0", "12")))
         , 39, "E26", "User provided `memory` is 0 MB", "(12 MiB for this EIF)"),
        ("run-enclave", _wrapped(_block("E22", _fill(T.DETAIL["E22"], "cpu-count", "6"))), 39, "E22",
         "`cpu-count` is 6", "fewer CPUs than requested"),
        ("run-enclave", _wrapped(_block("E20", _fill(T.DETAIL["E20"], "cpu-ids", "12"))), 39, "E20",
         "(CPU(s) 12)", "listed twice"),
        ("run-enclave", _wrapped(_block("E21", _fill(T.DETAIL["E21"], "cpu-ids", "3"))), 39, "E21",
         "contains CPU 3", "not in the enclave CPU pool"),
        ("run-enclave", _wrapped(_block("E29", T.DETAIL["E29"])), 39, "E29", "Ioctl failure.",
         "every enclave slot is taken"),
        ("run-enclave", _wrapped(_block("E29", T.DETAIL["E29"]), allocating=True), 39, "E29", "Ioctl failure.",
         "the detail (from the error log) says why"),  # E29 alone names no cause: only its error log does
        ("run-enclave", _wrapped(_block("E36", T.DETAIL["E36"]), allocating=True), 39, "E36", "Enclave boot failure.",
         "did not finish booting"),
        # commands.rs:87 PcrSignatureChecker: before any memory is allocated
        ("run-enclave", _wrapped(_block("E59", T.DETAIL["E59"])), 39, "E59", "EIF signature checker error.",
         "re-sign the EIF"),
        ("run-enclave", _wrapped(_block("E27", _fill(T.DETAIL["E27"], "memory", "9999999999999")), allocating=True),
         39, "E27", "`memory` is 9999999999999 MB", "not enough hugepage memory"),
        # resource_manager.rs:331 ResourceAllocator::new (an empty EIF with --memory 0)
        ("run-enclave", _wrapped(_block("E26", _fill(T.DETAIL_E26_ZERO, "memory", "0"))), 39, "E26",
         "should be greater than 0 MB", "--memory is 0"),
        # commands_parser.rs:491: refused before the enclave process starts, so not wrapped
        ("run-enclave", _block("E03", _fill(T.DETAIL["E03"], "cpu-id", "x")), 3, "E03",
         "The parameter `cpu-id` is not a valid integer (`x`)", "not a valid value"),
        ("terminate-enclave", _block("E11", T.DETAIL["E11"]), 11, "E11", "Socket error.", "no enclave with that ID"),
        ("terminate-enclave", _block("E58", T.DETAIL["E58"]), 58, "E58", "Naming error.", "has that name"),
        # the hint never sends the operator back to the command that just failed (issue 9 item 10)
        ("describe-eif", _block("E35", T.DETAIL["E35"]), 35, "E35", "EIF file parsing error.", "rebuild it"),
        ("pcr", _block("E57", T.DETAIL["E57"]), 57, "E57", "Hasher error.", "not a PEM"),
        ("pcr", _block("E19", T.DETAIL["E19"]), 19, "E19", "File operation failure.", "a file could not be opened"),
    ]


@pytest.mark.parametrize("index", range(17))
def test_error_path_transcripts(fake: Fake, index: int) -> None:
    """Each failure path nitro-emu now takes the way nitro-cli does, as nitro-cli prints it: the driver
    reports the inner code (not E39), nitro-cli's whole message and a hint that fits the path."""
    command, stderr, exit_code, code, in_message, in_hint = _transcripts()[index]
    drv = fake.driver({command: {"stderr": stderr, "exit": exit_code}})
    with pytest.raises(NitroCliError) as info:
        if command == "run-enclave":
            drv.run_enclave(LaunchRequest("app.eif", 64, cpu_count=2))
        elif command == "terminate-enclave":
            drv.terminate(enclave_id="i-0-enc1")
        elif command == "describe-eif":
            drv.describe_eif("app.eif")
        else:
            drv.pcr(input="x")
    err = info.value
    assert err.code == code and err.exit_status == int(code[1:])
    assert in_message in err.message and "For more details" not in err.message
    assert in_hint in (err.hint or ""), err.hint
    assert err.log_path is not None and err.log_path.endswith("00000001+00:00.log")


def test_backtrace_block_and_its_error_log(fake: Fake, tmp_path: Path) -> None:
    """nitro-cli with BACKTRACE=1 (common/mod.rs:366) prints the backtrace inside the block; the driver
    keeps the message apart from it and reads the root cause from the log (here PcrSignatureChecker
    failing on a file that is no EIF: a hint about the file, not about re-signing)."""
    from tests import nitro_cli_texts as T

    backtrace = (
        "  Action: Run Enclave\n  Subactions:\n    Failed to execute command `Run`\n"
        "    Failed to trigger enclave run\n"
        '    Failed to create EIF signature checker: "Error while reading EIF header: failed to fill whole buffer"\n'
        "  Root error file: src/enclave_proc/commands.rs\n  Root error line: 88\n  Version: 1.5.0"
    )
    log = tmp_path / "err2026-01-01T00:00:00.000000001+00:00.log"
    log.write_text(backtrace)
    inner = (
        f"[ E59 ] {T.DETAIL['E59']}\n\nFor more details, please visit "
        "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E59\n\n"
        f"Backtrace:\n{backtrace}\n\n"
        f'If you open a support ticket, please provide the error log found at "{log}"\n'
    )
    drv = fake.driver({"run-enclave": {"stderr": inner + "Failed connections: 1\n" + _block("E39", T.DETAIL["E39"], 2),
                                       "exit": 39}})
    with pytest.raises(NitroCliError) as info:
        drv.run_enclave(LaunchRequest("app.eif", 64, cpu_count=2))
    err = info.value
    assert (err.code, err.message, err.log_path) == ("E59", T.DETAIL["E59"], str(log))
    assert "could not be read" in (err.hint or ""), err.hint


def test_clap_usage_error_transcript(fake: Fake) -> None:
    """A usage error is clap's text, exit 2, no [ Exx ]: the driver keeps the status and the error line."""
    stderr = (
        "error: the following required arguments were not provided:\n  --eif-path <eif-path>\n\n"
        "Usage: nitro-cli run-enclave --cpu-count <cpu-count> --memory <memory> --eif-path <eif-path>\n\n"
        "For more information, try '--help'.\n"
    )
    drv = fake.driver({"run-enclave": {"stderr": stderr, "exit": 2}})
    with pytest.raises(CommandFailed) as info:
        drv.run_enclave(LaunchRequest("app.eif", 64, cpu_count=2))
    assert info.value.exit_status == 2
    assert "error: the following required arguments were not provided:" in info.value.message


def _e29_with_log(tmp_path: Path, root_cause: str) -> str:
    """run-enclave's stderr for a driver refusal, its err log holding nitro-cli's own backtrace."""
    log = tmp_path / "err2026-01-01T00:00:00.000000003+00:00.log"
    log.write_text(
        "  Action: Run Enclave\n  Subactions:\n    Failed to execute command `Run`\n"
        "    Failed to trigger enclave run\n    Failed to run enclave\n    Failed to create enclave\n"
        f"    {root_cause}\n  Root error file: src/enclave_proc/resource_manager.rs\n  Root error line: 858\n"
        "  Version: 1.4.2"
    )
    return (
        "Start allocating memory...\n"
        "[ E29 ] Ioctl failure. Such error appears when the ioctl call fails.\n\n"
        "For more details, please visit https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E29\n\n"
        f'If you open a support ticket, please provide the error log found at "{log}"\n'
        "Failed connections: 1\n"
        "[ E39 ] Enclave process connection failure. Failed to connect to the enclave process.\n"
    )


# resource_manager.rs do_ioctl's texts, as real nitro-cli writes them into the error log: one E29 each
@pytest.mark.parametrize(("root_cause", "cause"), [
    ("The provided vCPU is already used", "held by a running enclave"),
    ("The provided vCPU is not available in the CPU pool", "not in the enclave CPU pool"),
    ("The provided vCPU is out of range of the available CPUs", "not in the enclave CPU pool"),
    ("The provided enclave CID is invalid, being a well-known CID or the parent VM CID", "CID is reserved"),
    ("The enclave's memory size is lower than the minimum supported", "below the minimum"),
    ("The memory region is not backed by contiguous physical huge page(s)", "hugepages the allocator reserved"),
    ("The enclave cannot start because full CPU cores have not been set", "full CPU cores"),
    ("The memory region's pages and the CPUs belong to different NUMA nodes", "one NUMA node"),
    ("The enclave cannot be created because no CPUs are available in the pool", "every CPU of the enclave pool"),
])
def test_e29_hint_follows_the_error_logs_cause(fake: Fake, tmp_path: Path, root_cause: str, cause: str) -> None:
    drv = fake.driver({"run-enclave": {"stderr": _e29_with_log(tmp_path, root_cause), "exit": 39}})
    with pytest.raises(NitroCliError) as info:
        drv.run_enclave(LaunchRequest("x.eif", 512, cpu_count=2))
    err = info.value
    assert err.code == "E29" and err.detail == root_cause
    assert cause in (err.hint or ""), err.hint
    assert f"error log says: {root_cause}" in str(err)
