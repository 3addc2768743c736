"""Resources: hugepages per size and NUMA node and the CPU pool from a fake sysfs tree; the emulator model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.backends.real import real_backend
from core.errors import InputTooLarge, NitrodeckError
from core.models import EnclaveInfo
from core.ops.resources import gather, parse_cpu_list, sysfs_cpu_pool, sysfs_hugepages
from emulator.backend import emulator_backend


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def enclave(eid: str, cpus: list[int], mib: int) -> EnclaveInfo:
    return EnclaveInfo(eid, 1, 16, len(cpus), cpus, mib, "RUNNING", "NONE", name=eid[-4:])


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    for node, (nr1g, free1g, nr2m, free2m) in enumerate([(2, 1, 512, 500), (0, 0, 128, 128)]):
        base = f"devices/system/node/node{node}/hugepages"
        write(tmp_path, f"{base}/hugepages-1048576kB/nr_hugepages", f"{nr1g}\n")
        write(tmp_path, f"{base}/hugepages-1048576kB/free_hugepages", f"{free1g}\n")
        write(tmp_path, f"{base}/hugepages-2048kB/nr_hugepages", f"{nr2m}\n")
        write(tmp_path, f"{base}/hugepages-2048kB/free_hugepages", f"{free2m}\n")
    write(tmp_path, "devices/system/node/has_cpu", "0-1\n")  # not a node dir: ignored
    write(tmp_path, "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "640\n")
    write(tmp_path, "kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "628\n")
    write(tmp_path, "module/nitro_enclaves/parameters/ne_cpus", "1,3,5-7\n")
    return tmp_path  # the folder that is /sys


def test_hugepages_per_node(sysfs: Path) -> None:
    pools = sysfs_hugepages(sysfs)
    got = [(p.size_kb, p.node, p.total, p.free, p.held_by_enclaves, p.source) for p in pools]
    assert got == [
        (1048576, 0, 2, 1, 1, "sysfs"),
        (1048576, 1, 0, 0, 0, "sysfs"),
        (2048, 0, 512, 500, 12, "sysfs"),
        (2048, 1, 128, 128, 0, "sysfs"),
    ]
    assert pools[0].total_mib == 2048 and pools[2].free_mib == 1000


def test_hugepages_global_fallback(tmp_path: Path) -> None:
    write(tmp_path, "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "10\n")
    write(tmp_path, "kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "garbage\n")
    write(tmp_path, "kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "1\n")
    write(tmp_path, "kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "1\n")
    pools = sysfs_hugepages(tmp_path)
    assert [(p.size_kb, p.node, p.total, p.free) for p in pools] == [(1048576, None, 1, 1)]
    assert sysfs_hugepages(tmp_path / "nothing") == []


def test_cpu_pool_and_holdings(sysfs: Path) -> None:
    assert sysfs_cpu_pool(sysfs) == [1, 3, 5, 6, 7]
    assert sysfs_cpu_pool(sysfs / "none") is None
    res = gather([enclave("i-1-enc1", [1, 5], 512), enclave("i-1-enc2", [3], 256)], real_backend(), root=sysfs)
    assert res.cpus.pool == [1, 3, 5, 6, 7] and res.cpus.free == [6, 7]
    assert res.cpus.held == {"i-1-enc1": [1, 5], "i-1-enc2": [3]}
    assert [(h.enclave_id, h.memory_mib) for h in res.enclaves] == [("i-1-enc1", 512), ("i-1-enc2", 256)]
    assert res.host.mem_total > 0 and 0 <= res.host.mem_used <= res.host.mem_total
    assert 0.0 <= res.host.cpu_percent <= 100.0


def test_cpu_list_errors() -> None:
    assert parse_cpu_list("") == [] and parse_cpu_list(" 0-2,2,9\n") == [0, 1, 2, 9]
    for bad in ("a", "3-1", "1,,2", "-1", "1-", "1-99999999"):
        with pytest.raises(NitrodeckError):
            parse_cpu_list(bad)
    with pytest.raises(InputTooLarge):
        parse_cpu_list("1," * 300)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789,- x²٣", max_size=60))
def test_cpu_list_fuzz(text: str) -> None:
    try:
        cpus = parse_cpu_list(text)
    except NitrodeckError:
        return
    assert cpus == sorted(set(cpus))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 20)), min_size=1, max_size=8))
def test_cpu_list_round_trip(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(f"{lo}-{lo + n}" if n else str(lo) for lo, n in ranges)
    expected = sorted({c for lo, n in ranges for c in range(lo, lo + n + 1)})
    if len(text) <= 512:
        assert parse_cpu_list(text) == expected


def restart_allocator() -> None:
    from emulator.allocator import start_allocator
    from emulator.instance import load_instance

    start_allocator(load_instance())


def test_emulator_model(nd_home: Path) -> None:
    etc = nd_home / "emulator" / "etc"
    etc.mkdir(parents=True)
    (etc / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 2\n")
    res = gather([], emulator_backend())
    # the default instance (2 threads per core): CPU 1 and its sibling 5; 1024 MiB as one 1 GiB page
    assert (res.cpus.source, res.cpus.pool, res.cpus.free) == ("emulator-model", [1, 5], [1, 5])
    assert [(p.size_kb, p.node, p.total, p.free, p.held_by_enclaves, p.source) for p in res.hugepages] == [
        (1048576, 0, 1, 1, 0, "emulator-model"),
        (2048, 0, 0, 0, 0, "emulator-model"),
    ]
    assert res.problem is None and res.driver_loaded is None  # no driver question under the emulator


def test_read_only_model_of_a_world_never_started_is_computed_in_memory(nd_home: Path) -> None:
    """Read-only, the allocator's first start is computed from the operator's allocator.yaml (or nitro-cli's
    default) and kept nowhere; the same pools come out of the first start that may write."""
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 4\n")
    files = sorted(p.relative_to(nd_home) for p in nd_home.rglob("*"))
    ro = gather([], emulator_backend(), read_only=True)
    assert ro.cpus.pool == [1, 2, 5, 6] and ro.problem is None
    assert [(p.size_kb, p.total) for p in ro.hugepages] == [(1048576, 1), (2048, 0)]
    assert sorted(p.relative_to(nd_home) for p in nd_home.rglob("*")) == files  # nothing written
    rw = gather([], emulator_backend())
    assert (rw.cpus.pool, rw.hugepages) == (ro.cpus.pool, ro.hugepages)
    assert (nd_home / "emulator" / "instance.yaml").is_file() and (nd_home / "emulator" / "run" / "allocator.json").is_file()
    # once started, read-only reads the started allocator, not allocator.yaml (as on a parent)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 2\n")
    assert gather([], emulator_backend(), read_only=True).cpus.pool == [1, 2, 5, 6]


def test_emulator_model_hugepages_on_the_pool_node(nd_home: Path) -> None:
    # 2 NUMA nodes of 4 cores; the pool is on node 1, so the allocator reserves its hugepages there
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 16\ncores: 8\nthreads_per_core: 2\nmemory_mib: 16384\n"
        "numa_nodes: 2\n"
    )
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_pool: 4,12\n")
    res = gather([], emulator_backend())
    assert res.cpus.pool == [4, 12]
    assert [(p.size_kb, p.node, p.total, p.free) for p in res.hugepages] == [(1048576, 1, 1, 1), (2048, 1, 0, 0)]
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_pool: 1,9\n")
    restart_allocator()  # allocator.yaml is read when the allocator starts
    assert {p.node for p in gather([], emulator_backend()).hugepages} == {0}


def test_emulator_allocator_error_is_shown_not_papered_over(nd_home: Path) -> None:
    # 3 CPUs on a 2-threads-per-core model: nitro-enclaves-allocator refuses it, so there is no pool
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 3\n")
    res = gather([], emulator_backend())
    assert res.cpus.pool == [] and res.hugepages == []
    assert res.problem is not None and "not multiple of 2" in res.problem
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 2\n")
    restart_allocator()
    assert gather([], emulator_backend()).problem is None


def test_sysfs_root_from_the_environment_and_no_driver(sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NITRODECK_SYSFS says where sysfs is; without the driver's pool file the problem says so."""
    monkeypatch.setenv("NITRODECK_SYSFS", str(sysfs))
    res = gather([], real_backend())
    assert res.cpus.pool == [1, 3, 5, 6, 7] and res.driver_loaded is True and res.problem is None
    assert [(p.size_kb, p.node, p.total, p.free) for p in res.hugepages][:1] == [(1048576, 0, 2, 1)]
    (sysfs / "module/nitro_enclaves/parameters/ne_cpus").unlink()
    res = gather([], real_backend())
    assert res.cpus.pool == [] and res.driver_loaded is False
    assert res.problem is not None and res.problem.startswith(
        f"the Nitro Enclaves driver is not loaded: {sysfs}/module/nitro_enclaves/parameters/ne_cpus does not exist")
    assert "(sysfs read from $NITRODECK_SYSFS)" in res.problem
