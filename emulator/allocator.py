"""allocator.yaml, the modelled enclave CPU pool and hugepage pool, and per-enclave picks from them.

Mirrors nitro-enclaves-allocator and the driver: CPU 0 and its siblings stay with the parent, only full
cores from one NUMA node join the pool, hugepages are reserved largest size first. Nothing here touches
the host's sysfs; the pools are a model computed from instance.yaml and allocator.yaml.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import home
from core.errors import NitrodeckError
from core.ops.allocator_file import MAX_ALLOCATOR_BYTES, AllocatorConfig, allocator_number
from core.ops.allocator_file import parse_allocator as _parse_allocator
from emulator.instance import Instance

MAX_POOL_CHARS = 512  # NE_CPUS_SIZE
DEFAULT_ALLOCATOR = "---\nmemory_mib: 512\ncpu_count: 2\n"
MIB = 1024 * 1024
# sizes the enclave process tries, in kB, largest first (nitro-cli resource_manager.rs)
ENCLAVE_PAGE_SIZES_KB = [16 << 20, 2 << 20, 1 << 20, 512 << 10, 256 << 10, 32 << 10, 16 << 10, 8 << 10, 2 << 10]
MIN_ENCLAVE_MIB = 64


class AllocatorError(NitrodeckError):
    """allocator.yaml cannot be turned into pools (messages as nitro-enclaves-allocator prints them)."""

    code = "EMU-ALLOCATOR"


def allocator_file() -> Path:
    return home.emulator_etc() / "allocator.yaml"


def parse_allocator(text: str, where: str = "allocator.yaml") -> AllocatorConfig:
    """bootstrap/nitro-enclaves-allocator's parse_config (core.ops.allocator_file, which the doctor reads
    a Nitro parent's file with too); its refusals as :class:`AllocatorError`."""
    return _parse_allocator(text, where, AllocatorError)


ALLOCATOR_ERRORS = {
    # bootstrap/nitro-enclaves-allocator: fail() with a numeric code
    200: "No CPUs are off-line. Please configure the CPU pool first.",
    206: "Failed to configure entire amount of requested memory. This indicates insufficient system resources.",
}
RUNNING_ENCLAVES = (
    "Could not re-online CPUs because there is at least one enclave currently running. Make sure you stop all "
    "enclaves prior to re-starting the nitro-enclaves-allocator.service."
)


@dataclass
class AllocatorState:
    """What the last start of the (emulated) nitro-enclaves-allocator service left behind.

    ``cpu_pool`` is the ne_cpus list in the order the script wrote it; ``hugepages`` the pages reserved
    per size (kB) on ``node``. ``output`` is what the script printed; ``error`` its failure, if any."""

    cpu_pool: list[int]
    hugepages: dict[int, int]
    node: int = 0
    error: str | None = None
    output: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_pool": self.cpu_pool,
            "hugepages": {str(k): v for k, v in self.hugepages.items()},
            "node": self.node,
            "error": self.error,
            "output": self.output,
        }

    @classmethod
    def from_json(cls, data: Any) -> AllocatorState:
        try:
            return cls(
                cpu_pool=[int(c) for c in data["cpu_pool"]],
                hugepages={int(k): int(v) for k, v in data["hugepages"].items()},
                node=int(data.get("node", 0)),
                error=None if data.get("error") is None else str(data["error"]),
                output=[str(line) for line in data.get("output", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise AllocatorError("the allocator's state file is corrupt") from None


class _Failed(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _reserve_hugepages(inst: Instance, memory: str, say: list[str]) -> dict[int, int] | int:
    """try_configure_huge_pages: the request rounded up to the smallest page size, largest pages first,
    each size as many as the node can give. Returns the pages, or the script's error code."""
    say.append("Configuring the huge page memory...")
    mib = allocator_number(memory)
    if mib is None:
        raise _Failed(f"The needed memory amount ({memory}) is invalid.")
    sizes = sorted(inst.hugepage_sizes_kb, reverse=True)
    smallest = sizes[-1] * 1024
    # bash: (1 + (m - 1) / s) * s, where -1 / s is 0: a request of 0 MiB reserves one smallest page
    remaining = (1 + (mib * MIB - 1) // smallest) * smallest if mib else smallest
    available = inst.memory_mib * MIB // inst.numa_nodes
    if inst.hugepages_reservable_mib is not None:
        # the model's fragmentation: the kernel sets fewer pages than asked, as nr_hugepages reads back
        available = min(available, inst.hugepages_reservable_mib * MIB)
    pages: dict[int, int] = {}
    for size_kb in sizes:
        size = size_kb * 1024
        got = min(remaining // size, available // size)
        pages[size_kb] = got
        available -= got * size
        if got:
            say.append(f"- Reserved {got} pages of type: {size_kb}kB.")
        remaining -= got * size
        if remaining == 0:
            break
    if remaining:
        say.append("Memory configuration failed, rolling back memory reservations...")
        return 206
    say.append("Done.")
    return {size_kb: pages.get(size_kb, 0) for size_kb in sizes}


def _pool_by_count(inst: Instance, cfg: AllocatorConfig, say: list[str]) -> tuple[list[int], dict[int, int]]:
    """configure_cpu_pool_by_cpu_count: full cores of one NUMA node, CPU 0's core left out, cores in the
    order of their lowest CPU, each core's threads together."""
    say.append("Auto-generating the enclave CPU pool by using the CPU count...")
    text = cfg.cpu_count or ""
    count = allocator_number(text)
    if count is None:
        raise _Failed(f"The CPU count value ({text}) is invalid.")
    if count <= 0:
        raise _Failed("Provided CPU count is not higher than 0.")
    if count > inst.vcpus:
        raise _Failed(f"Provided CPU count is higher than available CPUs - {inst.vcpus}.")
    if count % inst.threads_per_core:
        raise _Failed(f"The CPU count is not multiple of {inst.threads_per_core} (threads per core).")
    pool: list[int] = []
    pages: dict[int, int] | int = 0
    for node in range(inst.numa_nodes):
        pool = []
        node_cpus = [c for c in range(inst.vcpus) if inst.numa_node_of(c) == node]
        room = len(node_cpus) - (inst.threads_per_core if node == inst.numa_node_of(0) else 0)
        if count > room:
            continue
        found = False
        for cpu in node_cpus:
            if cpu == 0:
                continue
            threads = [c for c in range(1, inst.vcpus) if inst.core_of(c) == inst.core_of(cpu)]
            if len(threads) != inst.threads_per_core:
                continue
            pool.extend(t for t in threads if t not in pool)
            if len(pool) == count:
                say.append(f"Will try to reserve {cfg.memory_mib} MB of memory on node {node}.")
                pages = _reserve_hugepages(inst, cfg.memory_mib, say)
                found = not isinstance(pages, int)
                break
        if found:
            break
    if len(pool) != count:
        raise _Failed("Failed to find suitable CPUs for the Nitro Enclaves CPU pool after checking all NUMA nodes.")
    if isinstance(pages, int):
        raise _Failed(ALLOCATOR_ERRORS.get(pages, f"An unknown error has occurred: {pages}"))
    text_pool = ",".join(map(str, pool))
    say.append(f"Auto-generated the enclave CPU pool: {text_pool}.")
    _write_pool(inst, text_pool, say)
    return pool, pages


def driver_pool_problem(inst: Instance, text: str) -> str | None:
    """Why the driver's ne_setup_cpu_pool (ne_misc_dev.c) refuses a cpu-list written to ne_cpus."""
    if len(text) >= MAX_POOL_CHARS:
        return f"the CPU list is longer than {MAX_POOL_CHARS - 1} characters"
    try:
        cpus = parse_cpu_list(text)
    except AllocatorError:
        return "Error in cpulist parse"
    if not cpus:
        return "No CPUs available in CPU pool"
    for cpu in cpus:
        if cpu >= inst.vcpus:
            return f"CPU {cpu} does not exist"
    if len({inst.numa_node_of(c) for c in cpus}) > 1:
        return "CPUs with different NUMA nodes"
    if 0 in cpus:
        return "CPU 0 has to remain available"
    for sibling in inst.siblings(0):
        if sibling in cpus:
            return f"CPU sibling {sibling} for CPU 0 is in CPU pool"
    for cpu in cpus:
        for sibling in inst.siblings(cpu):
            if sibling not in cpus:
                return f"CPU {sibling} is not in CPU pool"
    return None


def _write_pool(inst: Instance, text: str, say: list[str]) -> None:
    say.append("Configuring the enclave CPU pool...")
    problem = driver_pool_problem(inst, text)
    if problem:
        # on Nitro the driver's reason goes to the kernel log; here it is said where it can be seen
        say.append(f"nitro-emu: the driver refused the CPU pool {text!r}: {problem}")
        raise _Failed("Failed to configure the CPU pool.")
    say.append("Done.")


def run_allocator(
    inst: Instance, text: str, where: str, previous: AllocatorState | None, enclaves_running: bool
) -> AllocatorState:
    """One start of nitro-enclaves-allocator.service over allocator.yaml's ``text``.

    As on Nitro: a file the parser refuses leaves the previous pools as they were; once the script has
    re-onlined the CPUs, a failure leaves no CPU pool and the previous hugepages (rolled back)."""
    say: list[str] = []
    before = previous or AllocatorState(cpu_pool=[], hugepages={})
    try:
        cfg = parse_allocator(text, where)
    except AllocatorError as exc:
        return AllocatorState(before.cpu_pool, before.hugepages, before.node, exc.message, [f"Error: {exc.message}"])
    if enclaves_running:
        return AllocatorState(
            before.cpu_pool, before.hugepages, before.node, RUNNING_ENCLAVES, [f"Error: {RUNNING_ENCLAVES}"]
        )
    try:
        if cfg.cpu_count:
            pool, pages = _pool_by_count(inst, cfg, say)
            msg = f"{cfg.cpu_count} CPUs"
        else:
            pool_text = cfg.cpu_pool or ""
            _write_pool(inst, pool_text, say)
            pool = parse_cpu_list(pool_text)
            got = _reserve_hugepages(inst, cfg.memory_mib, say)
            if isinstance(got, int):
                raise _Failed(ALLOCATOR_ERRORS.get(got, f"An unknown error has occurred: {got}"))
            pages = got
            msg = f"CPU pool: {pool_text}"
    except _Failed as exc:
        say.append(f"Error: {exc.message}")
        return AllocatorState([], before.hugepages, before.node, exc.message, say)
    say.append(f"Successfully allocated Nitro Enclaves resources: {cfg.memory_mib} MiB, {msg}")
    return AllocatorState(pool, pages, inst.numa_node_of(pool[0]), None, say)


def state_file() -> Path:
    return home.emulator_run_dir() / "allocator.json"


def load_allocator(path: Path | None = None, *, create: bool = True) -> AllocatorConfig:
    """allocator.yaml as the allocator would parse it now (what it is asked for; the pools in force are
    :func:`allocator_state`'s, from its last start)."""
    text, where = read_allocator_file(path, create=create)
    return parse_allocator(text, where)


def read_allocator_file(path: Path | None = None, *, create: bool = True) -> tuple[str, str]:
    """allocator.yaml's text and path, written with nitro-cli's default file when absent (with
    ``create=False``, read-only: that default's text, written nowhere)."""
    path = path or allocator_file()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_ALLOCATOR_BYTES + 1)
    except FileNotFoundError:
        if not create:
            return DEFAULT_ALLOCATOR, str(path)
        try:
            _create_default(path)
        except OSError:
            return DEFAULT_ALLOCATOR, str(path)  # cannot write it (full disk): nitro-cli's default all the same
        return read_allocator_file(path)
    except OSError as exc:
        raise AllocatorError(f"Could not open the file: {exc.strerror}.", where=str(path)) from None
    return raw.decode("utf-8", "replace"), str(path)


@contextlib.contextmanager
def _locked(create: bool = True) -> Iterator[None]:
    """The allocator's lock. ``create=False`` (read-only): only an existing lock file is taken; with none,
    no start has run yet, and one beginning now reads the same allocator.yaml: nothing to wait for."""
    lock = home.emulator_run_dir() / "allocator.lock"
    # opened read-only: flock needs no write access, and closing a file opened for writing is an
    # inotify IN_CLOSE_WRITE in the run folder, which front ends watch for enclave changes
    if create:
        home.ensure(lock.parent)
        fd: int | None = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    else:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _save(st: AllocatorState) -> None:
    path = state_file()
    import tempfile  # writers only: status reads the pools without it

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".allocator-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(st.to_json(), fh)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load() -> AllocatorState | None:
    try:
        with open(state_file(), "rb") as fh:
            raw = fh.read(1024 * 1024)
    except FileNotFoundError:
        return None
    try:
        return AllocatorState.from_json(json.loads(raw))
    except ValueError:
        raise AllocatorError("the allocator's state file is corrupt", where=str(state_file())) from None


def start_allocator(inst: Instance, enclaves_running: bool = False) -> AllocatorState:
    """(Re)start the emulated nitro-enclaves-allocator.service: allocator.yaml is read here, and only here.

    On a full disk the pools still come out right; they are kept only when the state can be written."""
    try:
        with _locked():
            text, where = read_allocator_file()
            st = run_allocator(inst, text, where, _load(), enclaves_running)
            _save(st)
    except OSError:
        text, where = read_allocator_file()
        return run_allocator(inst, text, where, _load(), enclaves_running)
    with contextlib.suppress(OSError):
        log = home.ensure(home.emulator_log_dir()) / "nitro-enclaves-allocator.log"
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in st.output))
    return st


def allocator_state(inst: Instance, *, read_only: bool = False) -> AllocatorState:
    """The pools as the allocator left them. The first use starts it, as the service starts at boot;
    after that allocator.yaml is not read again until ``nitro-emu restart-allocator``.

    ``read_only``: a first use computes what that start would leave (from allocator.yaml, or nitro-cli's
    default when there is none) and keeps it nowhere; a later start may still differ if the file changes."""
    st = _load()
    if st is not None:
        return st
    with contextlib.suppress(OSError), _locked(create=not read_only):
        st = _load()  # a start in flight (it holds the lock) has saved its state by now
    if st is not None:
        return st
    if read_only:
        text, where = read_allocator_file(create=False)
        return run_allocator(inst, text, where, None, enclaves_running=False)
    return start_allocator(inst)


def _create_default(path: Path) -> None:
    """Write nitro-cli's default file atomically: concurrent first users must never read it half-written."""
    home.ensure(path.parent)
    import tempfile  # writers only: status reads the pools without it

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".allocator-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(DEFAULT_ALLOCATOR)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


_RANGE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def parse_cpu_list(text: str, where: str = "cpu_pool") -> list[int]:
    """A kernel cpu-list (``2,3,6-9``) -> sorted unique CPU IDs."""
    if len(text) > MAX_POOL_CHARS:
        raise AllocatorError(f"The CPU pool is longer than {MAX_POOL_CHARS} characters.", where=where)
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        m = _RANGE.match(part)
        if not m:
            raise AllocatorError(f"Invalid CPU list entry {part!r}.", where=where)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo or hi - lo > 4096:
            raise AllocatorError(f"Invalid CPU interval {part!r}.", where=where)
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [cpu]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


# --- per-enclave picks ----------------------------------------------------------------------------


def pick_pages(free: dict[int, int], request_mib: int) -> dict[int, int] | int:
    """Choose hugepages for ``request_mib`` as the enclave process does (resource_manager.rs allocate).

    Largest sizes first while the need is at least a page; then, if need remains, each size from the
    smallest up until the need is covered; then, regions sorted largest first, keep those needed to
    reach the request and free the rest. Returns {size_kb: count}, or the MiB still missing
    (``needed_mem >> 20``, as its "Failed to allocate entire memory (N MB remained)" says)."""
    need = request_mib * MIB
    left = dict(free)
    taken: list[int] = []
    for size_kb in ENCLAVE_PAGE_SIZES_KB:
        while need >= size_kb * 1024 and left.get(size_kb, 0) > 0:
            taken.append(size_kb)
            left[size_kb] -= 1
            need -= size_kb * 1024
    if need > 0:
        for size_kb in reversed(ENCLAVE_PAGE_SIZES_KB):
            while need > 0 and left.get(size_kb, 0) > 0:
                taken.append(size_kb)
                left[size_kb] -= 1
                need -= size_kb * 1024
    if need > 0:
        return need >> 20
    need = request_mib * MIB
    out: dict[int, int] = {}
    for size_kb in sorted(taken, reverse=True):
        if need <= 0:
            break
        need -= size_kb * 1024
        out[size_kb] = out.get(size_kb, 0) + 1
    return out


def pages_mib(pages: dict[int, int]) -> int:
    return sum(size * n for size, n in pages.items()) // 1024


@dataclass
class HeldResources:
    enclave_id: str
    name: str
    cpu_ids: list[int]
    memory_mib: int
    pages: dict[int, int]


@dataclass
class HugepageUse:
    size_kb: int
    total: int
    free: int
    held: int
    #: the NUMA node the allocator reserved them on: the CPU pool's node (the driver wants both together)
    node: int = 0


@dataclass
class PoolSnapshot:
    """Read-only view of the modelled pools, for the status screen."""

    instance_id: str
    pool_cpus: list[int]
    free_cpus: list[int]
    pool_memory_mib: int
    free_memory_mib: int
    hugepages: list[HugepageUse]
    enclaves: list[HeldResources] = field(default_factory=list)
    error: str | None = None
    #: allocator.yaml's memory_mib (None when it cannot be read)
    requested_memory_mib: int | None = None


def snapshot(home_dir: Path | None = None, *, read_only: bool = False) -> PoolSnapshot:
    """The pools and what each live enclave holds, without changing anything. The first use creates
    the model's files (instance.yaml, allocator.yaml, the allocator's state) unless ``read_only``, which
    writes nothing: a world never set up is then its defaults, computed in memory."""
    from emulator import state
    from emulator.instance import load_instance

    with state.home_override(home_dir):
        return _snapshot(load_instance(create=not read_only), state, read_only)


def _snapshot(inst: Instance, state: Any, read_only: bool = False) -> PoolSnapshot:
    requested: int | None = None
    with contextlib.suppress(NitrodeckError):
        requested = allocator_number(load_allocator(create=not read_only).memory_mib)
    try:
        st = allocator_state(inst, read_only=read_only)
        pool, hp, error, node = list(st.cpu_pool), dict(st.hugepages), st.error, st.node
    except NitrodeckError as exc:
        pool, hp, error, node = [], {}, str(exc), 0
    entries = [e for e in state.read_entries() if state.entry_alive(e)]
    held_pages: dict[int, int] = {}
    held_cpus: set[int] = set()
    held: list[HeldResources] = []
    for e in entries:
        held_cpus.update(e.cpu_ids)
        for size, n in e.pages.items():
            held_pages[size] = held_pages.get(size, 0) + n
        held.append(HeldResources(e.enclave_id, e.name, list(e.cpu_ids), e.memory_mib, dict(e.pages)))
    hugepages = [
        HugepageUse(size, total, max(total - held_pages.get(size, 0), 0), held_pages.get(size, 0), node)
        for size, total in sorted(hp.items(), reverse=True)
    ]
    total_mib = pages_mib(hp)
    return PoolSnapshot(
        instance_id=inst.instance_id,
        pool_cpus=pool,
        free_cpus=[c for c in pool if c not in held_cpus],
        pool_memory_mib=total_mib,
        free_memory_mib=total_mib - pages_mib(held_pages),
        hugepages=hugepages,
        enclaves=held,
        error=error,
        requested_memory_mib=requested,
    )
