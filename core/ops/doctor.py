"""`nitrodeck doctor`: every precondition of running enclaves on this host, each a check with its fix.

The checks work on plain inputs (:class:`DoctorInputs`): paths, a filesystem root for sysfs and
/proc, a device path, the caller's identity, a backend-neutral view of the machine and of the
allocator (:class:`MachineView`, :class:`AllocatorView`). On a Nitro parent
:func:`host_inputs` gathers them from the host (sysfs, systemd, nitro-cli); under the emulator the
caller (console/) builds the same views from the emulator's model, so core never imports it.

Every probe is bounded in time: subprocesses and HTTP requests carry a short timeout, and only the
one configured metadata endpoint is contacted. The clock reference is injectable so tests can
bring a clock 30 minutes off without touching the machine's.
"""

from __future__ import annotations

import email.utils
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.backends.real import device_path, sysfs_root
from core.errors import NitrodeckError
from core.ops.allocator_file import MAX_ALLOCATOR_BYTES, allocator_number, parse_allocator
from core.ops.resources import HugepagePool, parse_cpu_list, sysfs_cpu_pool, sysfs_hugepages

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (OK, WARN, FAIL)
DEVICE = Path("/dev/nitro_enclaves")
ENCLAVE_GROUP = "ne"
ALLOCATOR_UNIT = "nitro-enclaves-allocator.service"
VSOCK_PROXY_UNIT = "nitro-enclaves-vsock-proxy.service"
ALLOCATOR_CONFIG = Path("/etc/nitro_enclaves/allocator.yaml")
VSOCK_PROXY_CONFIG = Path("/etc/nitro_enclaves/vsock-proxy.yaml")
#: IMDS's own address; the doctor contacts it only when it is the configured endpoint
IMDS_INSTANCE_TYPE = "http://169.254.169.254/latest/meta-data/instance-type"
ENV_METADATA_URL = "NITRODECK_METADATA_URL"
ENV_ECS_METADATA = "ECS_CONTAINER_METADATA_URI_V4"
PROBE_TIMEOUT = 2.0
MAX_PROBE_BYTES = 64 * 1024
MAX_CONFIG_BYTES = MAX_ALLOCATOR_BYTES
#: the parent keeps the ECS agent, Docker, the parent container and EIF builds
PARENT_MIB_WARN, PARENT_MIB_FAIL = 1024, 512
#: an EIF build writes the image's layers and the EIF (hundreds of MiB)
DISK_MIB_WARN, DISK_MIB_FAIL = 1024, 200
#: attestation documents are accepted for 300 s (core.testsign/attestation); certificates carry time
SKEW_WARN_S, SKEW_FAIL_S = 5.0, 120.0


class DoctorError(NitrodeckError):
    code = "ND-DOCTOR"


# --- inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who will run nitro-cli: its uid, groups and user name (for the usermod fix)."""

    uid: int
    gids: tuple[int, ...]
    user: str
    #: the groups the user database gives this user: a group added there after login is not in ``gids``
    db_gids: tuple[int, ...] = ()

    @classmethod
    def current(cls) -> Identity:
        uid = os.geteuid()
        db: tuple[int, ...] = ()
        try:
            entry = pwd.getpwuid(uid)
            user = entry.pw_name
            db = tuple(sorted(os.getgrouplist(user, entry.pw_gid)))
        except (KeyError, OSError):
            user = str(uid)
        return cls(uid, tuple(sorted({os.getegid(), *os.getgroups()})), user, db)


@dataclass(frozen=True)
class MachineView:
    """The parent instance: the emulator's instance.yaml, or this host's CPUs and memory."""

    source: str  # "emulator-model" | "host"
    vcpus: int
    threads_per_core: int
    memory_mib: int
    numa_nodes: int = 1
    instance_id: str | None = None
    instance_type: str | None = None
    #: each core's CPUs (hyperthread siblings together); empty when the topology is not known
    cores: tuple[tuple[int, ...], ...] = ()
    #: the NUMA node of each CPU (index: the CPU's number); empty when not known
    cpu_nodes: tuple[int, ...] = ()
    #: MiB of memory on each NUMA node; empty when not known (the allocator reserves on one node)
    node_memory_mib: tuple[int, ...] = ()

    def core_of(self, cpu: int) -> tuple[int, ...]:
        return next((core for core in self.cores if cpu in core), (cpu,))

    def node_of(self, cpu: int) -> int | None:
        return self.cpu_nodes[cpu] if 0 <= cpu < len(self.cpu_nodes) else None


@dataclass(frozen=True)
class AllocatorView:
    """What the allocator was asked for (allocator.yaml) and what the kernel actually reserved."""

    service_state: str  # "active" | "failed" | "inactive" | "unknown" (systemd's words)
    service_detail: str
    config_path: str
    requested_memory_mib: int | None = None
    requested_cpu_count: int | None = None
    requested_cpu_pool: list[int] | None = None
    config_error: str | None = None
    #: present hugepages per size and NUMA node
    hugepages: list[HugepagePool] = field(default_factory=list)
    #: CPUs the driver holds for enclaves (ne_cpus), None when the driver does not say
    pool_cpus: list[int] | None = None
    #: of those, the CPUs actually offlined from the parent (None: not known)
    offline_cpus: list[int] | None = None
    pool_node: int | None = None


@dataclass(frozen=True)
class TimeReference:
    when: datetime
    source: str
    #: this host's clock when the reference was read (the request's midpoint); None: now
    local: datetime | None = None


def _reference(date: datetime, source: str, sent: datetime, received: datetime) -> TimeReference:
    # a Date header is truncated to the second: its middle, against the middle of the request
    return TimeReference(date + timedelta(milliseconds=500), source, sent + (received - sent) / 2)


@dataclass
class DoctorInputs:
    backend: str  # "real" | "emulator"
    home: Path
    machine: MachineView | None
    allocator: AllocatorView
    #: why there is no machine view (the emulator's instance.yaml refused) and what fixes it
    machine_error: str | None = None
    machine_fix: str | None = None
    #: /dev/nitro_enclaves, or the emulator's stand-in (its run folder, which gates enclave creation)
    device: Path = DEVICE
    device_is_char: bool = True  # a real device must be a character device; the stand-in is a folder
    identity: Identity = field(default_factory=Identity.current)
    root: Path = Path("/")  # where sys/ and proc/ are read (tests: a fake tree)
    #: sysfs itself when it is not root/sys ($NITRODECK_SYSFS: a container with the host's sysfs elsewhere)
    sysfs: Path | None = None
    nitro_cli: tuple[str, ...] = ("nitro-cli",)
    #: MiB of memory the parent keeps (MemAvailable), None to derive from the machine view
    parent_available_mib: int | None = None
    vsock_proxy_state: str = "unknown"
    vsock_proxy_config: Path = VSOCK_PROXY_CONFIG
    #: the allowlist entry the deployment needs (KMS of the region, or the local KMS)
    kms_target: tuple[str, int] | None = None
    docker_host: str | None = None
    metadata_url: str | None = None
    #: a second time source when the metadata endpoint gives none: the KMS endpoint (its Date header)
    time_url: str | None = None
    #: the clock's reference; default: the Date header of the metadata endpoint's (or time_url's) answer
    reference: Callable[[], TimeReference | None] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    timeout: float = PROBE_TIMEOUT


# --- result -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoctorCheck:
    id: str
    title: str
    status: str  # ok | warn | fail
    found: str
    fix: str | None = None  # the exact command (or the one step) that fixes it; None when ok


@dataclass
class DoctorReport:
    backend: str
    taken_at: str
    checks: list[DoctorCheck]

    @property
    def ok(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[DoctorCheck]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[DoctorCheck]:
        return [c for c in self.checks if c.status == WARN]

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}
        return {
            "ok": self.ok,
            "backend": self.backend,
            "taken_at": self.taken_at,
            "counts": counts,
            "checks": [asdict(c) for c in self.checks],
        }


# --- small bounded probes -----------------------------------------------------------------------------


def run_bounded(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit status or None when it could not run / timed out, first line of output)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return None, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]}: no answer within {timeout:g}s"
    except OSError as exc:
        return None, f"{argv[0]}: {exc.strerror or exc}"
    out = (proc.stdout or proc.stderr)[:MAX_PROBE_BYTES].decode("utf-8", "replace").strip()
    return proc.returncode, out.splitlines()[0] if out else ""


def systemd_state(unit: str, timeout: float = PROBE_TIMEOUT) -> tuple[str, str]:
    """(state, detail) from `systemctl is-active`; "unknown" without systemd (e.g. in a container)."""
    code, out = run_bounded(["systemctl", "is-active", unit], timeout)
    if code is None:
        return "unknown", out
    state = out.strip() or "unknown"
    if state not in ("active", "inactive", "failed", "activating", "deactivating"):
        return "unknown", state[:80]
    return state, f"systemctl is-active: {state}"


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    date: datetime | None


def http_probe(url: str, timeout: float) -> HttpAnswer:
    """GET ``url`` (IMDSv2 token first for IMDS-shaped paths); bounded in time and size."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DoctorError("the metadata URL must be http(s)://host/...", where=url[:200])
    headers: dict[str, str] = {}
    if parts.path.startswith("/latest/"):
        token_url = f"{parts.scheme}://{parts.netloc}/latest/api/token"
        req = urllib.request.Request(
            token_url, method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                headers["X-aws-ec2-metadata-token"] = resp.read(4096).decode("ascii", "replace").strip()
        except (urllib.error.URLError, OSError, ValueError):
            pass  # IMDSv1, or an endpoint without tokens: the GET says whether it answers
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, resp.read(MAX_PROBE_BYTES), _http_date(resp.headers.get("Date")))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, b"", _http_date(exc.headers.get("Date") if exc.headers else None))


def _http_date(value: str | None) -> datetime | None:
    if not value or len(value) > 64:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- allocator.yaml (the operator's request) ----------------------------------------------------------


def parse_allocator_request(raw: bytes, where: str) -> tuple[int, int | None, list[int] | None]:
    """(memory_mib, cpu_count, cpu_pool) from allocator.yaml, read as nitro-enclaves-allocator reads it
    (core.ops.allocator_file: a file YAML accepts may still stop the service); DoctorError in its words."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise DoctorError(f"larger than {MAX_CONFIG_BYTES} bytes", where=where)
    cfg = parse_allocator(raw.decode("utf-8", "replace"), where, DoctorError)
    mem = allocator_number(cfg.memory_mib)
    if mem is None:
        raise DoctorError(f"The needed memory amount ({cfg.memory_mib[:40]}) is invalid.", where=where)
    count: int | None = None
    if cfg.cpu_count is not None:
        count = allocator_number(cfg.cpu_count)
        if count is None:
            raise DoctorError(f"The CPU count value ({cfg.cpu_count[:40]}) is invalid.", where=where)
        if count <= 0:
            raise DoctorError("Provided CPU count is not higher than 0.", where=where)
    cpus = parse_cpu_list(cfg.cpu_pool, where) if cfg.cpu_pool is not None else None
    return mem, count, cpus


# --- host gathering (Nitro parent) --------------------------------------------------------------------


def _read_text(path: Path, limit: int = 64 * 1024) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("ascii", "replace")
    except OSError:
        return None


def mem_available_mib(root: Path) -> int | None:
    text = _read_text(root / "proc/meminfo")
    m = re.search(r"^MemAvailable:\s+(\d{1,15}) kB", text or "", re.M)
    return int(m.group(1)) // 1024 if m else None


def _mem_total_mib(root: Path) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d{1,15}) kB", _read_text(root / "proc/meminfo") or "", re.M)
    return int(m.group(1)) // 1024 if m else None


_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,20}\.[a-z0-9-]{1,20}")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,32}")


def _dmi(sys_: Path, name: str, pattern: re.Pattern[str]) -> str | None:
    # on Nitro instances DMI says what the instance is: product_name its type, board_asset_tag its ID
    text = (_read_text(sys_ / "devices/virtual/dmi/id" / name, 256) or "").strip()
    return text if pattern.fullmatch(text) else None


def _cpu_node(sys_: Path, cpu: int) -> int | None:
    """The NUMA node of ``cpu``: its nodeN link, which an offlined CPU keeps (the allocator reads it too)."""
    for link in (sys_ / f"devices/system/cpu/cpu{cpu}").glob("node[0-9]*"):
        if link.name[4:].isdigit():
            return int(link.name[4:])
    return None


def host_machine(root: Path, instance_type: str | None = None, sysfs: Path | None = None) -> MachineView | None:
    sys_ = sysfs or root / "sys"
    online = _read_text(sys_ / "devices/system/cpu/present")
    siblings = _read_text(sys_ / "devices/system/cpu/cpu0/topology/thread_siblings_list")
    memory = _mem_total_mib(root)
    if online is None or memory is None:
        return None
    try:
        present = parse_cpu_list(online, "cpu/present")
        threads = max(len(parse_cpu_list(siblings, "thread_siblings_list")), 1) if siblings else 1
    except NitrodeckError:
        return None
    vcpus = len(present)
    node_dirs = sorted(
        (d for d in (sys_ / "devices/system/node").glob("node[0-9]*") if d.name[4:].isdigit()),
        key=lambda d: int(d.name[4:]),
    )
    nodes = len(node_dirs) or 1
    # each CPU's node: its own link, else the node whose cpulist names it (online CPUs only there)
    by_list: dict[int, int] = {}
    node_mib: list[int] = []
    for d in node_dirs:
        try:
            for cpu in parse_cpu_list(_read_text(d / "cpulist") or "", str(d)):
                by_list[cpu] = int(d.name[4:])
        except NitrodeckError:
            pass
        m = re.search(r"MemTotal:\s+(\d{1,15}) kB", _read_text(d / "meminfo") or "")
        if m:
            node_mib.append(int(m.group(1)) // 1024)
    links = {c: _cpu_node(sys_, c) for c in present}
    cpu_nodes = tuple(n if n is not None else by_list.get(c, 0) for c, n in links.items())
    # cores by EC2's numbering (CPU n and n + cores are siblings): an offlined CPU, as the pool's are,
    # has no topology folder left to ask
    per = max(vcpus // threads, 1)
    cores: dict[int, set[int]] = {}
    for cpu in present:
        cores.setdefault(cpu % per, set()).add(cpu)
    return MachineView(
        "host", vcpus, threads, memory, nodes,
        _dmi(sys_, "board_asset_tag", _INSTANCE_ID), instance_type or _dmi(sys_, "product_name", _INSTANCE_TYPE),
        tuple(tuple(sorted(c)) for _, c in sorted(cores.items())), cpu_nodes,
        tuple(node_mib) if len(node_mib) == len(node_dirs) else (),
    )


def offline_cpus(sysfs: Path, cpus: list[int]) -> list[int]:
    return [c for c in cpus if (_read_text(sysfs / f"devices/system/cpu/cpu{c}/online") or "1").strip() == "0"]


def host_allocator(
    root: Path, config: Path = ALLOCATOR_CONFIG, timeout: float = PROBE_TIMEOUT, sysfs: Path | None = None
) -> AllocatorView:
    sys_ = sysfs or root / "sys"
    state, detail = systemd_state(ALLOCATOR_UNIT, timeout)
    mem = count = None
    pool_req: list[int] | None = None
    error = None
    try:
        with open(config, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        mem, count, pool_req = parse_allocator_request(raw, str(config))
    except OSError as exc:
        error = f"cannot read {config}: {exc.strerror or exc}"
    except NitrodeckError as exc:
        error = str(exc)
    try:
        pool = sysfs_cpu_pool(sys_)  # resources' readers take the sysfs folder itself
    except NitrodeckError:
        pool = None
    node = _cpu_node(sys_, pool[0]) if pool else None
    if pool and node is None:
        # no nodeN link: the node whose cpulist names it (a kernel lists only online CPUs there)
        for n in (sys_ / "devices/system/node").glob("node[0-9]*"):
            cpulist = _read_text(n / "cpulist") or ""
            try:
                if pool[0] in parse_cpu_list(cpulist, str(n)):
                    node = int(n.name[4:])
            except NitrodeckError:
                continue
    return AllocatorView(
        state,
        detail,
        str(config),
        mem,
        count,
        pool_req,
        error,
        sysfs_hugepages(sys_),
        pool,
        offline_cpus(sys_, pool) if pool else None,
        node,
    )


def default_metadata_url(backend: str) -> str | None:
    """Only the configured endpoint is ever contacted: $NITRODECK_METADATA_URL, the ECS task's
    metadata URI, and IMDS only on a Nitro parent (the emulator has none unless one is configured)."""
    explicit = os.environ.get(ENV_METADATA_URL, "").strip()
    if explicit:
        return explicit
    ecs = os.environ.get(ENV_ECS_METADATA, "").strip()
    if ecs:
        return ecs
    return IMDS_INSTANCE_TYPE if backend == "real" else None


def region() -> str:
    for name in ("NITRODECK_UP_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return "us-east-1"


def host_inputs(
    home: Path,
    *,
    root: Path = Path("/"),
    metadata_url: str | None = None,
    timeout: float = PROBE_TIMEOUT,
    nitro_cli: tuple[str, ...] = ("nitro-cli",),
    allocator_config: Path = ALLOCATOR_CONFIG,
    vsock_proxy_config: Path = VSOCK_PROXY_CONFIG,
    time_url: str | None = None,
) -> DoctorInputs:
    """Everything a Nitro parent's doctor needs, read from this host. sysfs is ``$NITRODECK_SYSFS`` (or
    /sys) on the real root, ``root/sys`` in a fake tree."""
    proxy_state, _ = systemd_state(VSOCK_PROXY_UNIT, timeout)
    sysfs = sysfs_root() if root == Path("/") else root / "sys"
    return DoctorInputs(
        backend="real",
        home=home,
        machine=host_machine(root, sysfs=sysfs),
        allocator=host_allocator(root, allocator_config, timeout, sysfs),
        sysfs=sysfs,
        vsock_proxy_config=vsock_proxy_config,
        device=root / "dev/nitro_enclaves" if root != Path("/") else device_path(),  # $NITRODECK_DEVICE
        root=root,
        nitro_cli=nitro_cli,
        parent_available_mib=mem_available_mib(root),
        vsock_proxy_state=proxy_state,
        kms_target=(f"kms.{region()}.amazonaws.com", 443),
        docker_host=os.environ.get("DOCKER_HOST"),
        metadata_url=metadata_url or default_metadata_url("real"),
        time_url=time_url or f"https://kms.{region()}.amazonaws.com/",
        timeout=timeout,
    )


# --- the checks ---------------------------------------------------------------------------------------


def _check(cid: str, title: str, status: str, found: str, fix: str | None = None) -> DoctorCheck:
    return DoctorCheck(cid, title, status, found, None if status == OK else fix)


#: families without Nitro Enclaves (the user guide's requirements): burstable T, A1, Mac, the -flex types
_NO_ENCLAVES = re.compile(r"(t[0-9][a-z0-9-]*|a1|mac[a-z0-9-]*|[a-z0-9-]+-flex)\.")
_SUPPORTED_TYPE = ("launch an instance type with Nitro Enclaves: Intel or AMD with at least 4 vCPUs, Graviton with at "
                   "least 2, not T, A1, Mac or -flex (e.g. c6i.xlarge, c6g.large), with --enclave-options Enabled=true "
                   "(deploy/nitrodeck.yaml: InstanceType)")


def check_instance(inp: DoctorInputs, metadata: HttpAnswer | None) -> DoctorCheck:
    m = inp.machine
    if m is None:
        if inp.machine_error:
            # the emulator's instance.yaml: the model every other check stands on
            return _check("instance", "instance", FAIL, inp.machine_error[:200], inp.machine_fix)
        return _check("instance", "instance", WARN, "cannot read the CPU and memory topology",
                      f"ls {(inp.sysfs or inp.root / 'sys') / 'devices/system/cpu'} (is sysfs mounted?)")
    kind = m.instance_type
    if kind is None and metadata is not None and metadata.status == 200 and inp.metadata_url and \
            inp.metadata_url.rstrip("/").endswith("instance-type"):
        kind = metadata.body.decode("ascii", "replace").strip()[:40] or None
    what = f"{kind or ('emulated instance' if m.source == 'emulator-model' else 'instance type unknown')}"
    if m.instance_id:
        what += f" {m.instance_id}"
    found = f"{what}: {m.vcpus} vCPUs ({m.threads_per_core} per core), {m.memory_mib} MiB, {m.numa_nodes} NUMA node(s)"
    if kind and _NO_ENCLAVES.match(kind):
        return _check("instance", "instance", FAIL, found + f": {kind.split('.')[0]} instances have no Nitro Enclaves",
                      _SUPPORTED_TYPE)
    # CPU 0's core stays with the parent, and an enclave takes whole cores: one more core at least
    # (4 vCPUs with two threads per core, 2 without, as Graviton)
    if m.vcpus < 2 * m.threads_per_core:
        return _check("instance", "instance", FAIL, found + ": no full core is left for an enclave", _SUPPORTED_TYPE)
    return _check("instance", "instance", OK, found)


def check_enclave_support(inp: DoctorInputs) -> DoctorCheck:
    title = "enclave support"
    try:
        st = os.stat(inp.device)
    except FileNotFoundError:
        if inp.backend == "emulator":
            return _check("device", title, OK, f"emulated; {inp.device} is created by the first run-enclave")
        return _check("device", title, FAIL, f"{inp.device} does not exist: enclaves are not enabled on this instance",
                      "enclave support is chosen at launch: launch with --enclave-options Enabled=true "
                      "(deploy/nitrodeck.yaml's launch template sets EnclaveOptions.Enabled)")
    except OSError as exc:
        return _check("device", title, FAIL, f"{inp.device}: {exc.strerror}", f"ls -l {inp.device}")
    if inp.device_is_char and not stat.S_ISCHR(st.st_mode):
        return _check("device", title, FAIL, f"{inp.device} exists but is not a character device",
                      f"sudo rm {inp.device} && sudo modprobe -r nitro_enclaves && sudo modprobe nitro_enclaves")
    what = "device" if inp.device_is_char else "emulator stand-in"
    return _check("device", title, OK, f"{inp.device} ({what})")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_device_access(inp: DoctorInputs) -> DoctorCheck:
    title = f"access ({ENCLAVE_GROUP} group)"
    try:
        st = os.stat(inp.device)
    except OSError:
        return _check("access", title, OK if inp.backend == "emulator" else FAIL,
                      f"{inp.device} is missing (see enclave support)",
                      "launch with --enclave-options Enabled=true")
    mode = stat.S_IMODE(st.st_mode)
    group = _group_name(st.st_gid)
    found = f"{inp.device} {stat.filemode(st.st_mode)} {st.st_uid}:{group}; {inp.identity.user} (uid {inp.identity.uid})"
    who = inp.identity
    rw = (stat.S_IRUSR | stat.S_IWUSR, stat.S_IRGRP | stat.S_IWGRP, stat.S_IROTH | stat.S_IWOTH)
    if who.uid == 0:
        return _check("access", title, OK, found + " is root")
    if st.st_uid == who.uid and mode & rw[0] == rw[0]:
        return _check("access", title, OK, found + " owns it")
    if st.st_gid in who.gids and mode & rw[1] == rw[1]:
        return _check("access", title, OK, found + f" is in group {group}")
    # the device is root:ne 0660 (aws-nitro-enclaves-cli's udev rule); the emulator's stand-in is a folder
    perms = "0660" if inp.device_is_char else "0770"
    if mode & rw[2] == rw[2]:
        return _check("access", title, WARN, found + ": anyone may use it",
                      f"sudo chgrp {ENCLAVE_GROUP} {inp.device} && sudo chmod {perms} {inp.device}")
    if mode & rw[1] == rw[1]:
        if st.st_gid in who.db_gids:
            # the most common one: added to the group after this session began, which keeps its old groups
            return _check("access", title, FAIL,
                          found + f" is in group {group}, but this session is not (it began before that)",
                          f"newgrp {group}  # or log out and in again")
        return _check("access", title, FAIL, found + f" is not in group {group}",
                      f"sudo usermod -aG {group} {who.user}  # then log in again (or: newgrp {group})")
    # groupadd -f: the group exists wherever aws-nitro-enclaves-cli is installed, and this adds it elsewhere
    return _check("access", title, FAIL, found + ": the group may not read and write it",
                  f"sudo groupadd -f {ENCLAVE_GROUP} && sudo chgrp {ENCLAVE_GROUP} {inp.device} && "
                  f"sudo chmod {perms} {inp.device} && sudo usermod -aG {ENCLAVE_GROUP} {who.user}")


def check_driver(inp: DoctorInputs) -> DoctorCheck:
    if inp.backend == "emulator":
        return _check("driver", "driver", OK, "emulated by nitro-emu (no kernel module)")
    module = (inp.sysfs or inp.root / "sys") / "module/nitro_enclaves"
    if module.is_dir():
        return _check("driver", "driver", OK, "nitro_enclaves loaded")
    return _check("driver", "driver", FAIL, "the nitro_enclaves module is not loaded",
                  "sudo modprobe nitro_enclaves  # provided by the kernel of Amazon Linux 2023 and aws-nitro-enclaves-cli")


def check_nitro_cli(inp: DoctorInputs) -> DoctorCheck:
    name = "nitro-emu" if inp.backend == "emulator" else "nitro-cli"
    code, out = run_bounded([*inp.nitro_cli, "--version"], inp.timeout * 3)
    if code == 0 and out:
        return _check("nitro-cli", name, OK, out[:80])
    fix = ("pip install -e .  # nitro-emu ships with nitrodeck" if inp.backend == "emulator"
           else "sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel")
    return _check("nitro-cli", name, FAIL, out[:160] or f"`{name} --version` exited {code}", fix)


def _restart(inp: DoctorInputs) -> str:
    if inp.backend == "emulator":
        # the emulated allocator reads allocator.yaml when it starts, as the service does
        return f"edit {inp.allocator.config_path}, then `nitro-emu restart-allocator`"
    return f"sudo systemctl restart {ALLOCATOR_UNIT} && journalctl -u {ALLOCATOR_UNIT} -n 20"


def check_allocator_service(inp: DoctorInputs) -> DoctorCheck:
    a = inp.allocator
    title = "allocator service"
    if a.service_state == "active":
        return _check("allocator", title, OK, a.service_detail or "active")
    if a.service_state == "unknown" and a.hugepages and a.pool_cpus:
        # no systemd to ask (a container): what the kernel reserved is what counts
        return _check("allocator", title, WARN, f"{a.service_detail or 'cannot ask systemd'}; pools are reserved",
                      f"systemctl status {ALLOCATOR_UNIT}  # on the host")
    if a.service_state == "inactive":
        return _check("allocator", title, FAIL, a.service_detail or "inactive",
                      f"sudo systemctl enable --now {ALLOCATOR_UNIT}")
    fix = inp.machine_fix if inp.machine is None and inp.machine_error else _restart(inp)
    return _check("allocator", title, FAIL, (a.service_detail or a.service_state)[:200], fix)


def _cpus(cpus: list[int] | set[int] | tuple[int, ...]) -> str:
    return ",".join(map(str, sorted(cpus)))


def _topology_problems(a: AllocatorView, m: MachineView, mem: int) -> list[str]:
    """What the allocator script and the driver refuse beyond the totals: a cpu_pool with CPUs the machine
    lacks, CPU 0's core, half cores or two NUMA nodes (ne_setup_cpu_pool); a request no single NUMA node
    holds, since the CPU pool and its hugepages come from one node."""
    problems: list[str] = []
    #: the NUMA nodes the pool can sit on
    candidates = list(range(m.numa_nodes))
    if a.requested_cpu_pool is not None:
        absent = [c for c in a.requested_cpu_pool if c >= m.vcpus]
        if absent:
            problems.append(f"cpu_pool names CPU(s) {_cpus(absent)} the machine does not have (0-{m.vcpus - 1})")
        pool = [c for c in a.requested_cpu_pool if c < m.vcpus]
        if m.cores:
            kept = set(m.core_of(0)) & set(pool)
            if kept:
                problems.append(f"cpu_pool takes {_cpus(kept)} of CPU 0's core ({_cpus(m.core_of(0))}), "
                                "which stays with the parent")
            half = {s for c in pool for s in m.core_of(c)} - set(pool) - set(m.core_of(0))
            if half:
                problems.append(f"cpu_pool splits cores: add their sibling(s) {_cpus(half)} (whole cores only)")
        on = {n for n in (m.node_of(c) for c in pool) if n is not None}
        if len(on) > 1:
            problems.append(f"cpu_pool spans NUMA nodes {_cpus(on)} (one node only)")
        candidates = sorted(on)
    elif a.requested_cpu_count is not None and m.cpu_nodes and m.cores and m.numa_nodes > 1:
        cpu0 = set(m.core_of(0))
        room = {n: sum(1 for c, node in enumerate(m.cpu_nodes) if node == n and c not in cpu0) for n in candidates}
        candidates = [n for n in candidates if room[n] >= a.requested_cpu_count]
        if not candidates:
            problems.append(f"cpu_count {a.requested_cpu_count} fits no NUMA node (at most {max(room.values())} "
                            "CPUs on one node besides CPU 0's core)")
    held = [m.node_memory_mib[n] for n in candidates if n < len(m.node_memory_mib)]
    if m.numa_nodes > 1 and held and mem > max(held):
        problems.append(f"memory_mib {mem} is more than the CPU pool's NUMA node holds ({max(held)} MiB): "
                        "its hugepages come from that node")
    return problems


def check_allocator_config(inp: DoctorInputs) -> DoctorCheck:
    a, m = inp.allocator, inp.machine
    title = "allocator config"
    edit = f"edit {a.config_path}, then: {_restart(inp)}" if inp.backend == "real" else _restart(inp)
    if a.config_error:
        return _check("allocator-config", title, FAIL, a.config_error[:200], edit)
    mem = a.requested_memory_mib or 0
    cpus = f"cpu_count {a.requested_cpu_count}" if a.requested_cpu_count is not None else \
        f"cpu_pool {','.join(map(str, a.requested_cpu_pool or []))}"
    found = f"memory_mib {mem}, {cpus}"
    if m is None:
        return _check("allocator-config", title, WARN, found + " (machine size unknown)", edit)
    problems = []
    if mem + PARENT_MIB_FAIL > m.memory_mib:
        problems.append(f"memory_mib {mem} leaves less than {PARENT_MIB_FAIL} MiB of the machine's {m.memory_mib} MiB")
    want = a.requested_cpu_count if a.requested_cpu_count is not None else len(a.requested_cpu_pool or [])
    if want > m.vcpus - m.threads_per_core:
        problems.append(f"{want} CPUs asked, at most {m.vcpus - m.threads_per_core} of {m.vcpus} can leave the parent "
                        "(CPU 0's core stays)")
    elif a.requested_cpu_count is not None and want % m.threads_per_core:
        problems.append(f"cpu_count {want} is not a multiple of {m.threads_per_core} (whole cores only)")
    problems += _topology_problems(a, m, mem)
    if problems:
        return _check("allocator-config", title, FAIL, f"{found}: " + "; ".join(problems), edit)
    return _check("allocator-config", title, OK, f"{found} of {m.vcpus} vCPUs, {m.memory_mib} MiB")


def _pages_text(pools: list[HugepagePool]) -> str:
    parts = []
    for p in pools:
        if p.total:
            size = f"{p.size_kb // 1048576}G" if p.size_kb >= 1048576 else f"{p.size_kb // 1024}M"
            node = "" if p.node is None else f"@node{p.node}"
            parts.append(f"{p.total}x{size}{node}")
    return " + ".join(parts) or "none"


def check_hugepages(inp: DoctorInputs) -> DoctorCheck:
    a = inp.allocator
    title = "hugepages"
    want = a.requested_memory_mib
    present = sum(p.total_mib for p in a.hugepages)
    found = f"requested {want if want is not None else '?'} MiB, present {present} MiB ({_pages_text(a.hugepages)})"
    if want is None:
        return _check("hugepages", title, WARN if present else FAIL, found, _restart(inp))
    if present < want:
        fix = _restart(inp)
        if inp.backend == "real":
            fix += ("  # if fewer pages come back, memory is fragmented: reboot (the allocator reserves at boot)"
                    " or reserve at boot with the kernel parameters hugepagesz=1G hugepages=N")
        elif a.service_state == "failed" and "memory" not in a.service_detail.lower():
            # the allocator stopped before it reserved memory (its CPU pool failed): that is the fix
            fix = f"fix what the allocator service check says: {_restart(inp)}"
        else:
            fix = (f"lower memory_mib in {a.config_path}, or raise hugepages_reservable_mib in the emulator's "
                   "instance.yaml (the model's memory fragmentation)")
        return _check("hugepages", title, FAIL, found + f": {want - present} MiB short", fix)
    if a.pool_node is not None:
        # the driver takes an enclave's memory from its CPUs' node only (NE_ERR_MEM_DIFFERENT_NUMA_NODE)
        usable = sum(p.total_mib for p in a.hugepages if p.node is None or p.node == a.pool_node)
        if usable < want:
            return _check("hugepages", title, FAIL,
                          found + f": {usable} MiB on the CPU pool's node {a.pool_node}, {want - usable} MiB short",
                          _restart(inp))
        elsewhere = [p for p in a.hugepages if p.total and p.node is not None and p.node != a.pool_node]
        if elsewhere:
            return _check("hugepages", title, WARN,
                          found + f": pages on a node other than the CPU pool's node {a.pool_node}", _restart(inp))
    # the allocator rounds the request up to its smallest page size, no further
    smallest = min((p.size_kb // 1024 for p in a.hugepages), default=2)
    if present - want >= max(smallest, 2):
        return _check("hugepages", title, WARN, found + f": {present - want} MiB more than allocator.yaml asks "
                      "(changed since the allocator ran?)", _restart(inp))
    return _check("hugepages", title, OK, found)


def check_cpu_pool(inp: DoctorInputs) -> DoctorCheck:
    a = inp.allocator
    title = "CPU pool"
    pool = a.pool_cpus or []
    want: int | None = a.requested_cpu_count
    if want is None and a.requested_cpu_pool is not None:
        want = len(a.requested_cpu_pool)
    found = f"requested {want if want is not None else '?'}, pool [{','.join(map(str, pool)) or 'empty'}]"
    if a.offline_cpus is not None:
        found += f", offlined [{','.join(map(str, a.offline_cpus)) or 'none'}]"
    if not pool:
        # nothing for any enclave, whatever allocator.yaml says (or when it cannot be read)
        return _check("cpu-pool", title, FAIL, found + ": no CPU is set aside for enclaves", _restart(inp))
    if want is not None and len(pool) < want:
        return _check("cpu-pool", title, FAIL, found, _restart(inp))
    if a.requested_cpu_pool is not None and sorted(pool) != sorted(a.requested_cpu_pool):
        return _check("cpu-pool", title, FAIL, found + " differs from the configured cpu_pool", _restart(inp))
    if a.offline_cpus is not None and sorted(a.offline_cpus) != sorted(pool):
        return _check("cpu-pool", title, FAIL, found + ": pool CPUs still online in the parent", _restart(inp))
    if want is not None and len(pool) > want:
        # allocator.yaml changed since the allocator last ran: the next restart (a reboot) shrinks the pool
        return _check("cpu-pool", title, WARN, found + ": more than allocator.yaml asks (changed since the "
                      "allocator ran?)", _restart(inp))
    if want is None:
        return _check("cpu-pool", title, WARN, found + " (allocator.yaml unreadable: see allocator config)",
                      _restart(inp))
    return _check("cpu-pool", title, OK, found)


def check_parent_memory(inp: DoctorInputs) -> DoctorCheck:
    title = "parent memory"
    left = inp.parent_available_mib
    how = "available"
    if left is None and inp.machine is not None:
        left = inp.machine.memory_mib - (inp.allocator.requested_memory_mib or 0)
        how = "left after the enclave reservation"
    if left is None and inp.machine_error:
        return _check("parent-memory", title, WARN, "unknown: no machine model (see instance)", inp.machine_fix)
    if left is None:
        return _check("parent-memory", title, WARN, "unknown (no /proc/meminfo)", "free -m")
    found = f"{left} MiB {how}"
    fix = f"lower memory_mib in {inp.allocator.config_path}, or use a larger instance type"
    if left < PARENT_MIB_FAIL:
        return _check("parent-memory", title, FAIL, found + f" (below {PARENT_MIB_FAIL} MiB)", fix)
    if left < PARENT_MIB_WARN:
        return _check("parent-memory", title, WARN, found + f" (below {PARENT_MIB_WARN} MiB)", fix)
    return _check("parent-memory", title, OK, found)


def check_vsock_proxy(inp: DoctorInputs) -> DoctorCheck:
    from core.channel.proxy import load_allowlist

    title = "vsock-proxy"
    path = inp.vsock_proxy_config
    if inp.backend == "emulator" and not path.exists():
        return _check("vsock-proxy", title, WARN, f"no allowlist yet at {path}",
                      "nitrodeck kms local-server  # writes the emulator's allowlist with its endpoint")
    try:
        entries = load_allowlist(path)
    except NitrodeckError as exc:
        example = "allowlist:\\n- {address: kms.us-east-1.amazonaws.com, port: 443}\\n"
        return _check("vsock-proxy", title, FAIL, f"allowlist: {exc.message} ({path})"[:200],
                      f"printf '{example}' | sudo tee {path}" if inp.backend == "real" else
                      f"printf '{example}' > {path}")
    listed = f"{len(entries)} allowlist entr{'y' if len(entries) == 1 else 'ies'} in {path}"
    if inp.kms_target is not None:
        host, port = inp.kms_target
        if not any(e.address == host and e.port == port for e in entries):
            return _check("vsock-proxy", title, FAIL, f"{listed}; {host}:{port} (KMS) is not listed",
                          f"printf -- '- {{address: {host}, port: {port}}}\\n' | "
                          f"{'sudo tee -a' if inp.backend == 'real' else 'tee -a'} {path}")
    state = inp.vsock_proxy_state
    if state == "active":
        # `nitrodeck up` runs its own proxy on vsock 8000, the service's port too
        return _check("vsock-proxy", title, WARN, f"{VSOCK_PROXY_UNIT} active; {listed}",
                      f"sudo systemctl disable --now {VSOCK_PROXY_UNIT}  # nitrodeck up runs the proxy itself")
    if state == "failed":
        return _check("vsock-proxy", title, WARN, f"{VSOCK_PROXY_UNIT} failed; {listed}",
                      f"sudo systemctl reset-failed {VSOCK_PROXY_UNIT}")
    service = "nitrodeck up runs the proxy" if state in ("inactive", "unknown") else state
    return _check("vsock-proxy", title, OK, f"{listed}; {service}")


def _denied(exc: BaseException) -> bool:
    """Whether a Docker client failure comes from EACCES on the daemon's socket (docker-py wraps it
    in requests' ConnectionError, whose cause chain or text holds the PermissionError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PermissionError):
            return True
        if any(isinstance(arg, PermissionError) for arg in getattr(current, "args", ())):
            return True
        current = current.__cause__ or current.__context__
    return "Permission denied" in str(exc)


def check_docker(inp: DoctorInputs) -> DoctorCheck:
    title = "Docker daemon"
    where = inp.docker_host or "unix:///var/run/docker.sock"
    fix = "sudo systemctl enable --now docker" if inp.backend == "real" else \
        "start dockerd (or point DOCKER_HOST at a running one)"
    try:
        import docker

        client = docker.DockerClient(base_url=where, timeout=max(int(inp.timeout), 1), version="1.24")
        try:
            info = client.version()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable daemon
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _denied(exc):
            # the daemon may well be running: this user may not open its socket (the usual cause: not
            # in the docker group, or added to it after logging in)
            return _check("docker", title, FAIL, f"permission denied at {where}"[:200],
                          "sudo usermod -aG docker $USER  # then log in again (or: newgrp docker)")
        return _check("docker", title, FAIL, f"no answer at {where}: {text}"[:200], fix)
    api = str(info.get("ApiVersion", "?"))
    found = f"Docker {info.get('Version', '?')}, API {api} at {where}"
    try:
        major, minor = (int(x) for x in api.split(".")[:2])
    except ValueError:
        return _check("docker", title, WARN, found + " (unreadable API version)", fix)
    if (major, minor) < (1, 41):
        # build-enclave's Docker client needs a current API
        return _check("docker", title, WARN, found + " (older than API 1.41)", "sudo dnf update -y docker")
    return _check("docker", title, OK, found)


def check_metadata(inp: DoctorInputs, answer: HttpAnswer | None, error: str | None) -> DoctorCheck:
    title = "instance metadata"
    url = inp.metadata_url
    if url is None:
        return _check("metadata", title, OK, f"no endpoint configured (set ${ENV_METADATA_URL} to check one)")
    fix = ("aws ec2 modify-instance-metadata-options --instance-id <this instance> --http-endpoint enabled "
           "--http-put-response-hop-limit 2  # containers are one hop further")
    if answer is None:
        return _check("metadata", title, FAIL, f"{url}: {error}"[:200], fix)
    if answer.status != 200:
        return _check("metadata", title, FAIL, f"{url}: HTTP {answer.status}", fix)
    return _check("metadata", title, OK, f"{url}: HTTP 200")


def check_clock(inp: DoctorInputs, ref: TimeReference | None, ref_error: str | None) -> DoctorCheck:
    title = "clock"
    if ref is None:
        status = OK if inp.backend == "emulator" and inp.metadata_url is None else WARN
        return _check("clock", title, status, f"not compared: {ref_error or 'no time reference'}",
                      "chronyc tracking  # Amazon Time Sync is 169.254.169.123")
    skew = ((ref.local or inp.now()) - ref.when).total_seconds()
    found = f"{round(skew):+d}s against {ref.source}"
    fix = "sudo systemctl restart chronyd && sudo chronyc makestep  # attestation documents and certificates carry time"
    if abs(skew) >= SKEW_FAIL_S:
        return _check("clock", title, FAIL, found, fix)
    if abs(skew) >= SKEW_WARN_S:
        return _check("clock", title, WARN, found, fix)
    return _check("clock", title, OK, found)


def check_disk(inp: DoctorInputs) -> DoctorCheck:
    title = "disk"
    where = inp.home
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return _check("disk", title, FAIL, f"{where}: {exc.strerror}", f"ls -ld {where}")
    free = usage.free // (1024 * 1024)
    found = f"{free} MiB free of {usage.total // (1024 * 1024)} MiB under {inp.home}"
    fix = f"du -xh --max-depth=2 {inp.home} | sort -h | tail  # then remove old EIFs under {inp.home / 'eifs'}"
    if free < DISK_MIB_FAIL:
        return _check("disk", title, FAIL, found, fix)
    if free < DISK_MIB_WARN:
        return _check("disk", title, WARN, found, fix)
    return _check("disk", title, OK, found)


def _date_of(url: str, timeout: float) -> tuple[TimeReference | None, str]:
    """The Date header of any answer from ``url`` (an error status still carries one)."""
    sent = datetime.now(UTC)
    try:
        answer = http_probe(url, timeout)
    except NitrodeckError as exc:
        return None, exc.message
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"{url}: no answer within {timeout:g}s ({getattr(exc, 'reason', None) or exc})"[:200]
    if answer.date is None:
        return None, f"{url} sent no Date header"
    return _reference(answer.date, f"the Date header of {url}", sent, datetime.now(UTC)), ""


def run_doctor(inp: DoctorInputs) -> DoctorReport:
    """Every check, in the order an operator fixes them. Never raises for what it finds."""
    answer: HttpAnswer | None = None
    meta_error: str | None = None
    sent = received = datetime.now(UTC)
    if inp.metadata_url:
        try:
            answer = http_probe(inp.metadata_url, inp.timeout)
            received = datetime.now(UTC)
        except NitrodeckError as exc:
            meta_error = exc.message
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            meta_error = f"no answer within {inp.timeout:g}s ({reason})"[:200]
    ref: TimeReference | None = None
    ref_error = meta_error
    if inp.reference is not None:
        try:
            ref = inp.reference()
        except (NitrodeckError, OSError, ValueError) as exc:
            ref_error = str(exc)[:200]
    elif answer is not None and answer.date is not None:
        ref = _reference(answer.date, f"the Date header of {inp.metadata_url}", sent, received)
    else:
        if answer is not None:
            ref_error = f"{inp.metadata_url} sent no Date header"
        if inp.time_url:
            ref, why = _date_of(inp.time_url, inp.timeout)
            ref_error = why if ref is None else ref_error
    checks = [
        check_instance(inp, answer),
        check_enclave_support(inp),
        check_device_access(inp),
        check_driver(inp),
        check_nitro_cli(inp),
        check_allocator_service(inp),
        check_allocator_config(inp),
        check_hugepages(inp),
        check_cpu_pool(inp),
        check_parent_memory(inp),
        check_vsock_proxy(inp),
        check_docker(inp),
        check_metadata(inp, answer, meta_error),
        check_clock(inp, ref, ref_error),
        check_disk(inp),
    ]
    return DoctorReport(inp.backend, inp.now().isoformat(timespec="seconds"), checks)
