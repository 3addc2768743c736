"""allocator.yaml, the modelled enclave CPU pool and hugepage pool, and per-enclave picks from them.

Mirrors nitro-enclaves-allocator and the driver: CPU 0 and its siblings stay with the parent, only full
cores from one NUMA node join the pool, hugepages are reserved largest size first. Nothing here touches
the host's sysfs; the pools are a model computed from instance.yaml and allocator.yaml.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import home
from core.errors import InputTooLarge, NitrodeckError
from emulator.instance import Instance

MAX_ALLOCATOR_BYTES = 4096
MAX_POOL_CHARS = 512  # NE_CPUS_SIZE
DEFAULT_ALLOCATOR = "---\nmemory_mib: 512\ncpu_count: 2\n"
MIB = 1024 * 1024
# sizes the enclave process tries, in kB, largest first (nitro-cli resource_manager.rs)
ENCLAVE_PAGE_SIZES_KB = [16 << 20, 2 << 20, 1 << 20, 512 << 10, 256 << 10, 32 << 10, 16 << 10, 8 << 10, 2 << 10]
MIN_ENCLAVE_MIB = 64


class AllocatorError(NitrodeckError):
    """allocator.yaml cannot be turned into pools (messages as nitro-enclaves-allocator prints them)."""

    code = "EMU-ALLOCATOR"


@dataclass(frozen=True)
class AllocatorConfig:
    memory_mib: int
    cpu_count: int | None = None
    cpu_pool: str | None = None


def allocator_file() -> Path:
    return home.emulator_etc() / "allocator.yaml"


def parse_allocator(text: str, where: str = "allocator.yaml") -> AllocatorConfig:
    if len(text.encode()) > MAX_ALLOCATOR_BYTES:
        raise InputTooLarge(f"larger than {MAX_ALLOCATOR_BYTES} bytes", where=where)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise AllocatorError("Config error: bad YAML format.", where=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AllocatorError("Config error: expected `key: value` lines.", where=where)
    unknown = sorted(str(k) for k in data if k not in ("memory_mib", "cpu_count", "cpu_pool"))
    if unknown:
        raise AllocatorError(f"Config error: unknown key(s) {', '.join(unknown)}.", where=where)
    mem = data.get("memory_mib")
    if mem is None:
        raise AllocatorError("Config error: missing memory reservation (`memory_mib`).", where=where)
    if not isinstance(mem, int) or isinstance(mem, bool) or mem < 0 or mem > 1 << 30:
        raise AllocatorError(f"Config error: `memory_mib` must be a non-negative integer, got {mem!r}.", where=where)
    count = data.get("cpu_count")
    pool = data.get("cpu_pool")
    if count is not None and pool is not None:
        raise AllocatorError("`cpu_count` conflicts with `cpu_pool`.", where=where)
    if count is None and pool is None:
        raise AllocatorError("Config error: missing CPU reservation (`cpu_count` or `cpu_pool`).", where=where)
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise AllocatorError(f"Config error: `cpu_count` must be an integer, got {count!r}.", where=where)
        if count <= 0:
            raise AllocatorError("Provided CPU count is not higher than 0.", where=where)
    if pool is not None:
        pool = str(pool)
        if len(pool) > MAX_POOL_CHARS:
            raise AllocatorError(f"The CPU pool is longer than {MAX_POOL_CHARS} characters.", where=where)
    return AllocatorConfig(memory_mib=mem, cpu_count=count, cpu_pool=pool)


def load_allocator(path: Path | None = None) -> AllocatorConfig:
    """allocator.yaml, written with nitro-cli's defaults when absent."""
    path = path or allocator_file()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_ALLOCATOR_BYTES + 1)
    except FileNotFoundError:
        _create_default(path)
        return load_allocator(path)
    except OSError as exc:
        raise AllocatorError(f"Could not open the file: {exc.strerror}.", where=str(path)) from None
    return parse_allocator(raw.decode("utf-8", "replace"), where=str(path))


def _create_default(path: Path) -> None:
    """Write nitro-cli's default file atomically: concurrent first users must never read it half-written."""
    home.ensure(path.parent)
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


def cpu_pool(inst: Instance, cfg: AllocatorConfig) -> list[int]:
    """The CPUs offered to enclaves, under the driver's rules."""
    parent = set(inst.siblings(0))
    if cfg.cpu_pool is not None:
        cpus = parse_cpu_list(cfg.cpu_pool)
        for cpu in cpus:
            if cpu >= inst.vcpus:
                raise AllocatorError(f"CPU {cpu} does not exist (the instance has {inst.vcpus} vCPUs).")
            if cpu in parent:
                raise AllocatorError(f"CPU {cpu} is CPU 0 or its sibling and stays with the parent instance.")
            missing = set(inst.siblings(cpu)) - set(cpus)
            if missing:
                raise AllocatorError(
                    f"CPU {cpu} is not part of a full core: add its sibling(s) {format_cpu_list(missing)}."
                )
        if len({inst.numa_node_of(c) for c in cpus}) > 1:
            raise AllocatorError("The CPU pool spans more than one NUMA node.")
        pool = cpus
    else:
        count = cfg.cpu_count or 0
        if count % inst.threads_per_core:
            raise AllocatorError(f"The CPU count is not multiple of {inst.threads_per_core} (threads per core).")
        need_cores = count // inst.threads_per_core
        pool = []
        for node in range(inst.numa_nodes):
            cores = [c for c in range(inst.cores) if c != inst.core_of(0) and inst.numa_node_of(c) == node]
            if len(cores) >= need_cores:
                pool = sorted(cpu for c in cores[:need_cores] for cpu in inst.siblings(c))
                break
        else:
            raise AllocatorError(
                "Failed to find suitable CPUs for the Nitro Enclaves CPU pool after checking all NUMA nodes."
            )
    if len(format_cpu_list(pool)) > MAX_POOL_CHARS:
        raise AllocatorError(f"The CPU pool is longer than {MAX_POOL_CHARS} characters.")
    return pool


def hugepage_pool(inst: Instance, cfg: AllocatorConfig) -> dict[int, int]:
    """Pages reserved per size (kB), largest first; the total rounds up to the smallest size."""
    if cfg.memory_mib > inst.memory_mib:
        raise AllocatorError(
            f"Failed to configure entire amount of requested memory: {cfg.memory_mib} MiB is more than the "
            f"instance's {inst.memory_mib} MiB."
        )
    pages = requested_hugepages(inst, cfg)
    got = reserved_hugepages(inst, pages)
    if got != pages:
        raise AllocatorError(
            f"Failed to configure entire amount of requested memory: {pages_mib(got)} MiB of {cfg.memory_mib} MiB "
            "reserved (the instance's memory is fragmented: hugepages_reservable_mib)."
        )
    return pages


def reserved_hugepages(inst: Instance, wanted: dict[int, int]) -> dict[int, int]:
    """The pages the kernel hands out for ``wanted``: all of them, unless the model's fragmentation
    (``hugepages_reservable_mib``) stops it first; largest size first, as the allocator asks."""
    budget_kb = None if inst.hugepages_reservable_mib is None else inst.hugepages_reservable_mib * 1024
    got: dict[int, int] = {}
    for size, count in sorted(wanted.items(), reverse=True):
        n = count if budget_kb is None else min(count, budget_kb // size)
        got[size] = n
        if budget_kb is not None:
            budget_kb -= n * size
    return got


def requested_hugepages(inst: Instance, cfg: AllocatorConfig) -> dict[int, int]:
    """What allocator.yaml asks the kernel for, per size (before fragmentation)."""
    sizes = sorted(inst.hugepage_sizes_kb, reverse=True)
    remaining_kb = cfg.memory_mib * 1024
    pages: dict[int, int] = {}
    for size in sizes[:-1]:
        pages[size] = remaining_kb // size
        remaining_kb -= pages[size] * size
    pages[sizes[-1]] = -(-remaining_kb // sizes[-1])
    return pages


# --- per-enclave picks ----------------------------------------------------------------------------


def pick_pages(free: dict[int, int], request_mib: int) -> dict[int, int] | int:
    """Choose hugepages for ``request_mib`` like the enclave process does.

    Returns {size_kb: count}, or the MiB still missing when the free pages cannot cover the request.
    Large pages first while the need is at least a page, then fill the rest from the smallest size
    upward, then give back surplus regions (smallest first) that the request does not need.
    """
    need = request_mib * 1024
    sizes = [s for s in ENCLAVE_PAGE_SIZES_KB if free.get(s, 0) > 0]
    taken: list[int] = []
    left = dict(free)
    for size in sizes:
        while need >= size and left[size] > 0:
            taken.append(size)
            left[size] -= 1
            need -= size
    for size in reversed(sizes):
        while need > 0 and left[size] > 0:
            taken.append(size)
            left[size] -= 1
            need -= size
    if need > 0:
        return -(-need // 1024)
    target = request_mib * 1024
    for size in sorted(taken):
        if sum(taken) - size >= target:
            taken.remove(size)
    out: dict[int, int] = {}
    for size in taken:
        out[size] = out.get(size, 0) + 1
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


def snapshot(home_dir: Path | None = None) -> PoolSnapshot:
    """The pools and what each live enclave holds, without changing anything."""
    from emulator import state
    from emulator.instance import load_instance

    with state.home_override(home_dir):
        return _snapshot(load_instance(), state)


def _snapshot(inst: Instance, state: Any) -> PoolSnapshot:
    requested: int | None = None
    try:
        cfg = load_allocator()
        requested = cfg.memory_mib
        pool = cpu_pool(inst, cfg)
        hp = hugepage_pool(inst, cfg)
        error = None
    except NitrodeckError as exc:
        pool, hp, error = [], {}, str(exc)
        if requested is not None and requested <= inst.memory_mib:
            # as on a parent whose allocator failed half-way: what the kernel did reserve stays
            hp = reserved_hugepages(inst, requested_hugepages(inst, cfg))
    entries = [e for e in state.read_entries() if state.entry_alive(e)]
    held_pages: dict[int, int] = {}
    held_cpus: set[int] = set()
    held: list[HeldResources] = []
    for e in entries:
        held_cpus.update(e.cpu_ids)
        for size, n in e.pages.items():
            held_pages[size] = held_pages.get(size, 0) + n
        held.append(HeldResources(e.enclave_id, e.name, list(e.cpu_ids), e.memory_mib, dict(e.pages)))
    node = inst.numa_node_of(pool[0]) if pool else 0
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
