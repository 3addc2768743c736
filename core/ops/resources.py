"""What the enclaves can use and what they hold: hugepages, the CPU pool, host load.

On Nitro, hugepages and the CPU pool come from sysfs (the allocator service reserves them). Under
the emulator there is no real reservation, so the pool and the hugepage model come from the
emulator's allocator (``source="emulator-model"``). Every sysfs path hangs off ``root``, the folder
that is sysfs: ``$NITRODECK_SYSFS`` or /sys (core.backends.real.sysfs_root), so a container that
mounts the host's sysfs elsewhere, and tests with a fake tree, work the same way.

Without the Nitro Enclaves driver there is no CPU pool file: the pools are then empty *because* the
driver is missing, and ``Resources.problem`` says so instead of showing an unexplained empty pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from core.backends.base import Backend, PoolModel
from core.backends.real import sysfs_root
from core.errors import InputTooLarge, NitrodeckError
from core.models import EnclaveInfo

NE_CPUS = "module/nitro_enclaves/parameters/ne_cpus"
GLOBAL_HUGEPAGES = "kernel/mm/hugepages"
NODES = "devices/system/node"
#: the driver's own limit on the pool string (NE_CPUS_SIZE)
MAX_CPU_LIST = 512
MAX_CPU_ID = 65535
_SMALL_FILE = 4096
_SIZE_DIR = re.compile(r"^hugepages-(\d{1,10})kB$")
_NODE_DIR = re.compile(r"^node(\d{1,5})$")


class ResourceError(NitrodeckError):
    code = "ND-RESOURCES"


@dataclass
class HugepagePool:
    size_kb: int
    node: int | None  # None: the system-wide counters (no per-node data)
    total: int
    free: int
    #: pages in use; on a Nitro parent the allocator reserves hugepages for enclaves, so in-use pages
    #: are what enclaves hold
    held_by_enclaves: int
    source: str  # "sysfs" | "emulator-model"

    @property
    def total_mib(self) -> int:
        return self.total * self.size_kb // 1024

    @property
    def free_mib(self) -> int:
        return self.free * self.size_kb // 1024


@dataclass
class CpuPool:
    pool: list[int]
    held: dict[str, list[int]] = field(default_factory=dict)  # enclave ID -> CPU IDs
    free: list[int] = field(default_factory=list)
    source: str = "sysfs"


@dataclass
class HostStats:
    cpu_percent: float
    mem_total: int  # bytes
    mem_used: int  # bytes


@dataclass
class EnclaveHolding:
    enclave_id: str
    name: str | None
    cpu_ids: list[int]
    memory_mib: int


@dataclass
class Resources:
    hugepages: list[HugepagePool]
    cpus: CpuPool
    host: HostStats
    enclaves: list[EnclaveHolding] = field(default_factory=list)
    #: why the pools are empty or partial (the emulator's allocator refused allocator.yaml, no driver)
    problem: str | None = None
    #: False when the Nitro Enclaves driver is not loaded (no CPU pool file); None under the emulator
    driver_loaded: bool | None = None


def _is_decimal(text: str) -> bool:
    # str.isdigit() also accepts "²" and other digits int() refuses
    return text.isascii() and text.isdigit()


def parse_cpu_list(text: str, where: str = "cpu list") -> list[int]:
    """Kernel cpu-list syntax (``1,3,6-9``); empty means no CPUs. Sorted, without duplicates."""
    text = text.strip()
    if len(text) > MAX_CPU_LIST:
        raise InputTooLarge(f"cpu list of {len(text)} characters exceeds {MAX_CPU_LIST}", where=where)
    cpus: set[int] = set()
    if not text:
        return []
    for part in text.split(","):
        part = part.strip()
        lo_text, dash, hi_text = part.partition("-")
        if not _is_decimal(lo_text) or (dash and not _is_decimal(hi_text)):
            raise ResourceError(f"bad cpu-list item {part[:20]!r}", where=where)
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
        if hi < lo or hi > MAX_CPU_ID:
            raise ResourceError(f"bad cpu range {part[:20]!r}", where=where)
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def _read_int(path: Path) -> int | None:
    try:
        with open(path, "rb") as fh:
            text = fh.read(_SMALL_FILE).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if _is_decimal(text) else None


def _pools_in(directory: Path, node: int | None) -> list[HugepagePool]:
    pools = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = _SIZE_DIR.match(entry.name)
        if not m:
            continue
        total = _read_int(entry / "nr_hugepages")
        free = _read_int(entry / "free_hugepages")
        if total is None or free is None:
            continue
        pools.append(HugepagePool(int(m.group(1)), node, total, free, max(total - free, 0), "sysfs"))
    return pools


def sysfs_hugepages(root: Path | None = None) -> list[HugepagePool]:
    """Per NUMA node when the kernel exposes it, else the system-wide counters; largest pages first."""
    root = sysfs_root() if root is None else root
    per_node: list[HugepagePool] = []
    nodes_dir = root / NODES
    try:
        node_dirs = sorted(d for d in nodes_dir.iterdir() if _NODE_DIR.match(d.name))
    except OSError:
        node_dirs = []
    for node_dir in node_dirs:
        m = _NODE_DIR.match(node_dir.name)
        assert m is not None
        per_node += _pools_in(node_dir / "hugepages", int(m.group(1)))
    pools = per_node or _pools_in(root / GLOBAL_HUGEPAGES, None)
    return sorted(pools, key=lambda p: (-p.size_kb, -1 if p.node is None else p.node))


def sysfs_cpu_pool(root: Path | None = None) -> list[int] | None:
    """The Nitro CPU pool, or None when the driver is not loaded."""
    path = (sysfs_root() if root is None else root) / NE_CPUS
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_CPU_LIST + 2).decode("ascii", "replace")
    except OSError:
        return None
    return parse_cpu_list(text, str(path))


def holdings(enclaves: list[EnclaveInfo]) -> list[EnclaveHolding]:
    return [EnclaveHolding(e.enclave_id, e.name, list(e.cpu_ids), e.memory_mib) for e in enclaves]


def cpu_pool(pool: list[int], enclaves: list[EnclaveInfo], source: str) -> CpuPool:
    held = {e.enclave_id: sorted(e.cpu_ids) for e in enclaves}
    used = {c for cpus in held.values() for c in cpus}
    return CpuPool(sorted(pool), held, [c for c in sorted(pool) if c not in used], source)


def host_stats() -> HostStats:
    """Host CPU and memory load; zeros when /proc cannot be read (a hardened or odd /proc must not
    fail the whole status: psutil raises OSError, psutil.Error or ValueError on unreadable files)."""
    try:
        mem = psutil.virtual_memory()
        # interval=None: compares against the previous call, so it never blocks a refresh
        return HostStats(float(psutil.cpu_percent(interval=None)), int(mem.total), int(mem.total - mem.available))
    except (OSError, psutil.Error, ValueError, RuntimeError):
        return HostStats(0.0, 0, 0)


# --- a backend's allocator model -----------------------------------------------------------------------


def model_resources(model: PoolModel) -> tuple[list[HugepagePool], list[int], str | None]:
    """A backend's allocator model (the emulator's) as pools, with the allocator's error if its last
    start failed. A failed start leaves what it left, as on a parent: no CPU pool once the service
    re-onlined the CPUs, the previous pools when it refused allocator.yaml before touching anything."""
    pages = [HugepagePool(u.size_kb, u.node, u.total, u.free, u.held, "emulator-model") for u in model.hugepages]
    return pages, list(model.pool_cpus), model.error or None


def no_driver_problem(root: Path) -> str:
    return (
        f"the Nitro Enclaves driver is not loaded: {root / NE_CPUS} does not exist, so there is no enclave "
        "CPU pool (and no hugepages are reserved for enclaves); on an enclave-enabled instance run "
        "`sudo systemctl enable --now nitro-enclaves-allocator.service`"
        + ("" if str(root) == "/sys" else " (sysfs read from $NITRODECK_SYSFS)")
    )


def gather(
    enclaves: list[EnclaveInfo], backend: Backend, root: Path | None = None, *, read_only: bool = False
) -> Resources:
    """The pools and host load; ``read_only``: the backend's model is read without writing anything."""
    problem = None
    driver: bool | None = None
    model = backend.pool_model(enclaves, read_only=read_only)
    if model is not None:
        pages, pool, problem = model_resources(model)
        cpus = cpu_pool(pool, enclaves, "emulator-model")
    else:
        root = sysfs_root() if root is None else root
        pages = sysfs_hugepages(root)
        pool_cpus = sysfs_cpu_pool(root)
        driver = pool_cpus is not None
        if not driver:
            problem = no_driver_problem(root)
        cpus = cpu_pool(pool_cpus or [], enclaves, "sysfs")
    return Resources(pages, cpus, host_stats(), holdings(enclaves), problem, driver)
