"""A frozen world for snapshot tests, screenshots and the benchmark: fixed enclaves, clock and samples.

Built from the real dataclasses (core.models, core.ops.resources, core.ops.lifecycle.Status) so the
dashboard renders exactly what it renders live. Nothing here touches the machine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from console.screens.source import DEBUG, MATCH, MISMATCH, UNPINNED, ExitedRow, Snapshot, Source
from core.backends.driver import CommandRecord
from core.errors import NitroCliError, ReadOnlyError
from core.models import (
    ZERO_PCR,
    BuildRequest,
    BuildResult,
    EifInfo,
    EnclaveInfo,
    LaunchRequest,
    Measurements,
    RunInfo,
)
from core.ops.journal import Event, format_time
from core.ops.lifecycle import Status
from core.ops.resources import CpuPool, EnclaveHolding, HostStats, HugepagePool, Resources
from emulator.backend import emulator_backend

FROZEN_NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
#: how long the frozen enclaves have been up (the age column), in the order they are listed
UPTIMES = (timedelta(days=3, hours=4, minutes=12), timedelta(minutes=1, seconds=19), timedelta(hours=26, minutes=5))
#: the audit log's lines as core.ops.audit writes them (the audit viewer's scene)
AUDIT = (
    {"time": "2026-11-24T07:47:51+00:00", "user": "ec2-user", "action": "launch", "result": "ok", "code": None,
     "backend": "emulator", "argv": ["nitro-emu", "run-enclave", "--eif-path", "/var/lib/nitrodeck/eifs/payments.eif",
                                     "--memory", "4096", "--cpu-count", "2", "--enclave-name", "payments"]},
    {"time": "2026-11-27T11:58:40+00:00", "user": "ec2-user", "action": "build", "result": "ok", "code": None,
     "backend": "emulator", "argv": ["nitro-emu", "build-enclave", "--output-file",
                                     "/var/lib/nitrodeck/eifs/nitrodeck-payload.eif", "--name", "nitrodeck-payload"]},
    {"time": "2026-11-27T11:58:41+00:00", "user": "ec2-user", "action": "launch", "result": "ok", "code": None,
     "backend": "emulator", "argv": ["nitro-emu", "run-enclave", "--eif-path",
                                     "/var/lib/nitrodeck/eifs/nitrodeck-payload.eif", "--memory", "512", "--cpu-count",
                                     "2", "--debug-mode", "--enclave-name", "nitrodeck-payload"]},
    {"time": "2026-11-27T11:59:30+00:00", "user": "ec2-user", "action": "launch", "result": "error", "code": "E27",
     "backend": "emulator", "argv": ["nitro-emu", "run-enclave", "--eif-path", "/var/lib/nitrodeck/eifs/payments.eif",
                                     "--memory", "4096", "--cpu-count", "2", "--enclave-name", "payments-2"]},
)
INSTANCE_ID = "i-0f1e2d3c4b5a69788"


def _pcr(seed: str) -> str:
    # Deterministic 96-hex-digit strings that look like SHA-384 values.
    import hashlib

    return hashlib.sha384(seed.encode()).hexdigest()


def _meas(seed: str) -> Measurements:
    return Measurements(_pcr(seed + "0"), _pcr(seed + "1"), _pcr(seed + "2"))


PAYMENTS = EnclaveInfo(
    enclave_id="i-0f1e2d3c4b5a69788-enc18c0a1b2c3d4e5f6",
    process_id=4242,
    cid=16,
    cpu_count=2,
    cpu_ids=[2, 3],
    memory_mib=1024,
    state="RUNNING",
    flags="NONE",
    name="payments",
    measurements=_meas("payments"),
    image_name="payments-signer",
    image_version="1.4.2",
    metadata=None,  # set below: describe-enclaves --metadata reports the launched EIF's metadata
    eif_path="/var/lib/nitrodeck/eifs/payments.eif",
)
SHELL = EnclaveInfo(
    enclave_id="i-0f1e2d3c4b5a69788-enc18c0a1b2c3d4e5f7",
    process_id=4310,
    cid=17,
    cpu_count=2,
    cpu_ids=[4, 5],
    memory_mib=512,
    state="RUNNING",
    flags="DEBUG_MODE",
    name="nitrodeck-payload",
    measurements=_meas("payload"),
    image_name="nitrodeck-payload",
    image_version="0.1.0",
    eif_path="/var/lib/nitrodeck/eifs/nitrodeck-payload.eif",
)
LEGACY = EnclaveInfo(
    enclave_id="i-0f1e2d3c4b5a69788-enc18c0a1b2c3d4e5f8",
    process_id=4377,
    cid=18,
    cpu_count=2,
    cpu_ids=[6, 7],
    memory_mib=512,
    state="RUNNING",
    flags="NONE",
    name="legacy-kms",
    measurements=_meas("legacy-new"),
    image_name="legacy-kms",
    image_version="0.9",
)

EXPECTED: dict[str, dict[int, str]] = {
    PAYMENTS.enclave_id: _meas("payments").pcrs(),
    SHELL.enclave_id: _meas("payload").pcrs(),
    LEGACY.enclave_id: _meas("legacy-old").pcrs(),
}
MATCHES = {PAYMENTS.enclave_id: MATCH, SHELL.enclave_id: DEBUG, LEGACY.enclave_id: MISMATCH}
#: which pin each verdict compared with (core.ops.expected: the EIF file's pin, else its image name)
PINS = {
    PAYMENTS.enclave_id: "payments-signer (EIF file)",
    SHELL.enclave_id: "nitrodeck-payload (image name)",
    LEGACY.enclave_id: "legacy-kms (image name)",
}

#: an enclave whose program crashed 0.3 s after its boot, 12 s before the frozen clock (debug mode:
#: the journal kept the last lines of its console)
CRASHED = EnclaveInfo(
    enclave_id="i-0f1e2d3c4b5a69788-enc18c0a1b2c3d4e5f9",
    process_id=0,
    cid=19,
    cpu_count=2,
    cpu_ids=[8, 9],
    memory_mib=512,
    state="EXITED",
    flags="DEBUG_MODE",
    name="ledger-sync",
    measurements=_meas("ledger"),
    image_name="ledger-sync",
    eif_path="/var/lib/nitrodeck/eifs/ledger-sync.eif",
)
CRASH_CONSOLE = [
    "[    0.000000] Linux version 4.14.256 (nitrodeck emulator stand-in)",
    "[    0.020000] Run /init as init process",
    "2026-11-27T11:59:47Z ledger-sync: starting, 2 workers",
    "2026-11-27T11:59:47Z ledger-sync: reading /etc/ledger/config.toml",
    "Traceback (most recent call last):",
    '  File "/app/ledger_sync.py", line 41, in <module>',
    "    config = load_config(CONFIG)",
    '  File "/app/ledger_sync.py", line 18, in load_config',
    "    return tomllib.loads(path.read_text())",
    "FileNotFoundError: [Errno 2] No such file or directory: '/etc/ledger/config.toml'",
]


def _crash_events() -> list[Event]:
    launched = FROZEN_NOW - timedelta(seconds=12.3)
    common = {"enclave_id": CRASHED.enclave_id, "name": CRASHED.name, "eif_path": CRASHED.eif_path,
              "pcr0": _pcr("ledger0")}
    return [
        Event(format_time(launched), "launched", **common, extra={"cid": 19, "cpu_ids": [8, 9], "memory_mib": 512,
                                                                  "debug": True, "image": "ledger-sync"}),
        Event(format_time(FROZEN_NOW - timedelta(seconds=12)), "exited", **common, extra={
            "uptime_s": 0.3, "uptime_source": "backend", "exit_status": 1, "last_console": CRASH_CONSOLE,
            "debug": True, "image": "ledger-sync",
        }),
    ]

def _eif_metadata(seed: str) -> dict[str, Any]:
    """What the emulator's build-enclave writes into an EIF (the shape of nitro-cli's metadata)."""
    if seed == "payments":
        docker: dict[str, Any] = {
            "Id": "sha256:5e1f0c9d2b7a43e8a61f0b2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e",
            "RepoTags": ["payments-signer:1.4.2"],
            "Config": {"Cmd": ["/usr/local/bin/payments-signer", "--vsock-port", "5005"], "Env": ["PATH=/usr/local/bin:/usr/bin"]},
        }
        built = "2026-11-26T09:14:02Z"
    else:
        docker = {
            "Id": "",
            "RepoTags": [],
            "Config": {
                "Cmd": ["python3", "-m", "enclave_app", "--port", "5005"],
                "Env": ["PYTHONPATH=/app", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            },
        }
        built = "2026-01-01T00:00:00Z"
    return {
        "BuildTime": built,
        "BuildTool": "nitrodeck",
        "BuildToolVersion": "0.1.0",
        "OperatingSystem": "Linux",
        "KernelVersion": "4.14.256",
        "DockerInfo": docker,
    }


PAYMENTS.metadata = _eif_metadata("payments")

ZEROS = "0" * 96
#: the nitrodeck payload's console in debug mode, as the emulator prints it (enclave_app/server.py):
#: debug mode attests all-zero PCR0-2 (PCR3 and PCR8 are zero without an IAM role or signing cert)
CONSOLE_LINES = [
    "[    0.000000] Linux version 4.14.256 (nitrodeck emulator stand-in)",
    "[    0.000000] Command line: reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on",
    "[    0.000000] x86/fpu: emulated enclave, no hypervisor",
    "[    0.010000] nsm: emulated Nitro Secure Module at $NITRODECK_NSM_SOCKET",
    "[    0.020000] Run /init as init process",
    "2026-11-27T11:58:41Z nitrodeck-enclave: starting version=0.1.0 pid=4310 cid=17 port=5005",
    *(f"2026-11-27T11:58:41Z nitrodeck-enclave: PCR{i} {ZEROS}" for i in (0, 1, 2, 3)),
    f"2026-11-27T11:58:41Z nitrodeck-enclave: PCR4 {_pcr('payload-pcr4')}",
    f"2026-11-27T11:58:41Z nitrodeck-enclave: PCR8 {ZEROS}",
    "2026-11-27T11:58:42Z nitrodeck-enclave: extension loaded: enclave_app.kms",
    "2026-11-27T11:58:42Z nitrodeck-enclave: listening on vsock port 5005; methods: attest, health, "
    "kms_generate_data_key, kms_generate_random, provision, public_keys, set_credentials, sign; keys: generated",
    "2026-11-27T11:59:10Z nitrodeck-enclave: request method=health in=0B out=412B 1.9ms",
    "2026-11-27T11:59:58Z nitrodeck-enclave: request method=sign in=61B out=4748B 43.7ms",
    "2026-11-27T11:59:59Z nitrodeck-enclave: request method=sign in=61B out=4692B 41.2ms",
]


class FrozenSource(Source):
    """Always the same world. Mutations are refused with a typed error (they would change it)."""

    schemes = ("secp256k1", "ed25519")

    def __init__(
        self,
        read_only: bool = False,
        enclaves: list[EnclaveInfo] | None = None,
        doctor_fails: bool = False,
        exited: bool = False,
    ) -> None:
        self.backend = emulator_backend("flag")
        #: the journal's exits in this world (the "dashboard-exited" scene has one)
        self.exited = [ExitedRow(CRASHED, _crash_events()[1], DEBUG, "ledger-sync (image name)", _meas("ledger").pcrs())] if exited else []
        self.read_only = read_only
        #: the doctor reports one failing check (hugepages short of the reservation)
        self.doctor_fails = doctor_fails
        if read_only:
            from core.ops.lifecycle import read_only_reason_flag

            self.read_only_reason = read_only_reason_flag()
        self._enclaves = [PAYMENTS, SHELL, LEGACY] if enclaves is None else enclaves
        self.console_lines = list(CONSOLE_LINES)
        self.mutations: list[str] = []
        #: console logs kept for enclaves (tests point these at real files)
        self.kept_logs: dict[str, Path] = {}
        #: build outputs that exist in this world (nothing on the machine is looked at)
        self.existing_outputs: set[Path] = set()

    def now(self) -> datetime:
        return FROZEN_NOW

    def snapshot(self) -> Snapshot:
        held = {e.enclave_id: list(e.cpu_ids) for e in self._enclaves}
        used = {c for ids in held.values() for c in ids}
        pool = [2, 3, 4, 5, 6, 7, 8, 9]
        mem_2m = sum(e.memory_mib for e in self._enclaves) // 2
        resources = Resources(
            hugepages=[
                HugepagePool(size_kb=2048, node=0, total=1536, free=1536 - mem_2m, held_by_enclaves=mem_2m, source="emulator-model"),
                HugepagePool(size_kb=1048576, node=0, total=2, free=2, held_by_enclaves=0, source="emulator-model"),
                HugepagePool(size_kb=2048, node=1, total=0, free=0, held_by_enclaves=0, source="emulator-model"),
            ],
            cpus=CpuPool(pool=pool, held=held, free=[c for c in pool if c not in used], source="emulator-model"),
            host=HostStats(cpu_percent=23.5, mem_total=16 * 1024**3, mem_used=int(6.2 * 1024**3)),
            enclaves=[EnclaveHolding(e.enclave_id, e.name, list(e.cpu_ids), e.memory_mib) for e in self._enclaves],
        )
        status = Status(
            backend=self.backend.name,
            backend_display=self.backend.display_name,
            instance_id=INSTANCE_ID,
            enclaves=list(self._enclaves),
            resources=resources,
            read_only=self.read_only,
            taken_at=FROZEN_NOW.isoformat(timespec="seconds"),
        )
        ids = {e.enclave_id for e in self._enclaves}
        return Snapshot(
            status,
            {k: v for k, v in MATCHES.items() if k in ids} | {e.enclave_id: UNPINNED for e in self._enclaves if e.enclave_id not in MATCHES},
            {k: v for k, v in EXPECTED.items() if k in ids},
            {e.enclave_id: self.describe_eif(Path(e.eif_path)) for e in self._enclaves if e.eif_path},
            {e.enclave_id: FROZEN_NOW - UPTIMES[i % len(UPTIMES)] for i, e in enumerate(self._enclaves)},
            exited=list(self.exited),
            pins={k: v for k, v in PINS.items() if k in ids},
            events={CRASHED.enclave_id: _crash_events()} if self.exited else {},
        )

    def doctor(self) -> Any:
        """What the doctor says about this world; nothing on the machine is probed."""
        from core.ops.doctor import DoctorCheck, DoctorReport

        home = "/var/lib/nitrodeck"
        hugepages = (
            DoctorCheck("hugepages", "hugepages", "fail", "requested 3072 MiB, present 2048 MiB (1x1G@node0 + 512x2M@node0): 1024 MiB short",
                        f"lower memory_mib in {home}/emulator/etc/allocator.yaml, or raise hugepages_reservable_mib in "
                        "the emulator's instance.yaml (the model's memory fragmentation)")
            if self.doctor_fails else
            DoctorCheck("hugepages", "hugepages", "ok", "requested 3072 MiB, present 3072 MiB (2x1G@node0 + 512x2M@node0)")
        )
        checks = [
            DoctorCheck("instance", "instance", "ok", f"emulated instance {INSTANCE_ID}: 16 vCPUs (2 per core), 16384 MiB, 2 NUMA node(s)"),
            DoctorCheck("device", "enclave support", "ok", f"{home}/emulator/run (emulator stand-in)"),
            DoctorCheck("access", "access (ne group)", "ok", f"{home}/emulator/run drwx------ 1000:ops; ops (uid 1000) owns it"),
            DoctorCheck("driver", "driver", "ok", "emulated by nitro-emu (no kernel module)"),
            DoctorCheck("nitro-cli", "nitro-emu", "ok", "Nitro CLI 1.5.0"),
            DoctorCheck("allocator", "allocator service", "ok", "nitro-emu allocator model: 3072 MiB, CPUs [2, 3, 4, 5, 6, 7, 8, 9]"),
            DoctorCheck("allocator-config", "allocator config", "ok", "memory_mib 3072, cpu_count 8 of 16 vCPUs, 16384 MiB"),
            hugepages,
            DoctorCheck("cpu-pool", "CPU pool", "ok", "requested 8, pool [2,3,4,5,6,7,8,9], offlined [2,3,4,5,6,7,8,9]"),
            DoctorCheck("parent-memory", "parent memory", "ok", "13312 MiB left after the enclave reservation"),
            DoctorCheck("vsock-proxy", "vsock-proxy", "warn", f"no allowlist yet at {home}/emulator/etc/vsock-proxy.yaml",
                        "nitrodeck kms local-server  # writes the emulator's allowlist with its endpoint"),
            DoctorCheck("docker", "Docker daemon", "ok", "Docker 27.5.1, API 1.47 at unix:///var/run/docker.sock"),
            DoctorCheck("metadata", "instance metadata", "ok", "no endpoint configured (set $NITRODECK_METADATA_URL to check one)"),
            DoctorCheck("clock", "clock", "ok", "not compared: no time reference"),
            DoctorCheck("disk", "disk", "ok", f"41873 MiB free of 81920 MiB under {home}"),
        ]
        return DoctorReport("emulator", FROZEN_NOW.isoformat(timespec="seconds"), checks)

    def audit_path(self) -> Path:
        return Path("/var/lib/nitrodeck/audit.log")

    def audit_entries(self) -> list[dict[str, Any]]:
        return [dict(e) for e in AUDIT]

    def host_history(self) -> tuple[list[float], list[float]]:
        rng = random.Random(7)
        cpu = [max(0.0, min(100.0, 20 + 15 * rng.random() + (i % 12))) for i in range(60)]
        mem = [36 + 4 * rng.random() for _ in range(60)]
        return cpu, mem

    def eif_dir(self) -> Path:
        return Path("/var/lib/nitrodeck/eifs")

    def eif_library(self) -> list[Path]:
        return [self.eif_dir() / "nitrodeck-payload.eif", self.eif_dir() / "payments.eif"]

    def initial_commands(self) -> list[Any]:
        return [
            CommandRecord("nitro-emu describe-enclaves", [], 0, 0.04, True),
            CommandRecord(
                "nitro-emu build-enclave --rootfs /var/lib/nitrodeck/build/payload/rootfs --cmd 'python3 -m enclave_app --port 5005' "
                "--build-time 2026-01-01T00:00:00Z --env PYTHONPATH=/app --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 "
                "--output-file /var/lib/nitrodeck/eifs/nitrodeck-payload.eif --name nitrodeck-payload --version 0.1.0",
                [], 0, 2.31, True,
            ),
            CommandRecord(
                "nitro-emu run-enclave --eif-path /var/lib/nitrodeck/eifs/nitrodeck-payload.eif --memory 512 --cpu-count 2 "
                "--debug-mode --enclave-name nitrodeck-payload",
                [], 0, 1.12, True,
            ),
            CommandRecord("nitro-emu run-enclave --eif-path /var/lib/nitrodeck/eifs/payments.eif --memory 4096 --cpu-count 2 --enclave-name payments-2", [], 27, 0.35, False, "E27"),
        ]

    def output_exists(self, path: Path) -> bool:
        return path in self.existing_outputs

    def eif_size(self, path: Path) -> int:
        return 42 * 1024 * 1024 if "payments" in path.name else 23 * 1024 * 1024

    def describe_eif(self, path: Path) -> EifInfo:
        seed = "payments" if "payments" in path.name else "payload"
        return EifInfo(
            version=4,
            measurements=_meas(seed),
            is_signed=seed == "payments",
            check_crc=True,
            image_name=path.stem,
            image_version="1.4.2" if seed == "payments" else "0.1.0",
            metadata=_eif_metadata(seed),
        )

    def docker_images(self) -> list[str]:
        return ["nitrodeck-payload:latest", "payments-signer:1.4.2", "hello-enclave:latest"]

    def _refuse(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{what} is refused: nitrodeck runs read-only")
        self.mutations.append(what)

    def build(self, req: BuildRequest, stage: Callable[[str], None]) -> BuildResult:
        self._refuse("build")
        # the stages LiveSource.build reports
        source = "payload" if req.payload else "Docker image" if req.docker_uri else "rootfs" if req.rootfs else "image"
        stage(f"building the EIF from the {source}: flatten, ramdisks, measure")
        stage("measured PCR0/1/2" + ("/8 (signed)" if req.signing_certificate else ""))
        stem = Path(req.output_file).stem
        return BuildResult(_meas("payload" if "payload" in stem else stem), req.output_file)

    def pin(self, image_name: str | None, measurements: Measurements, eif_path: str | None = None) -> str:
        self._refuse("pin")

    def launch(self, req: LaunchRequest) -> RunInfo:
        self._refuse("launch")
        # the frozen allocator has less free hugepage memory than any launch asks: E27, in the emulator's
        # own words (nitro-cli's text) for the memory this request asked, with core's hint for it
        from core import home
        from core.backends.driver import hint_for
        from emulator.errors import detail

        message = detail("E27", ["memory", str(req.memory_mib)])
        # the frozen world's home is /var/lib/nitrodeck whatever this machine's is: same screens everywhere
        hint = (hint_for("E27", message, self.backend) or "").replace(
            str(home.emulator_etc()), "/var/lib/nitrodeck/emulator/etc")
        raise NitroCliError(
            code="E27",
            message=message,
            hint=hint,
            log_path="/var/log/nitro_enclaves/err2026-11-27T12:00:00.000000000+00:00.log",
        )

    def terminate(self, enclave_id: str) -> Any:
        self._refuse("terminate")

    def terminate_all(self) -> Any:
        self._refuse("terminate-all")

    def test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str) -> Any:
        # test-sign changes nothing, so read-only allows it (as core does). The report is core's own
        # (core.ops.testsign.sign_report, core.attest.verify at FROZEN_NOW) over what an emulated enclave
        # answered, stored once in frozen_evidence.py: no check here is written by hand.
        from console.screens.frozen_attest import report

        return report(enclave, payload, scheme, EXPECTED.get(enclave.enclave_id), FROZEN_NOW)

    async def _lines(self) -> AsyncIterator[str]:
        for line in self.console_lines:
            yield line
        # a live console stays open; the worker cancels it
        while True:
            await asyncio.sleep(3600)

    def console(self, enclave_id: str) -> AsyncIterator[str]:
        return self._lines()

    def console_log(self, enclave_id: str) -> Path | None:
        return self.kept_logs.get(enclave_id)

    def set_enclaves(self, enclaves: list[EnclaveInfo]) -> None:
        """Change the world (tests: an enclave exits)."""
        self._enclaves = list(enclaves)


def zero_pcrs() -> Measurements:
    return Measurements(ZERO_PCR, ZERO_PCR, ZERO_PCR)
