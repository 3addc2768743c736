"""Isolating an enclave process as far as this machine allows.

* network: a fresh network namespace holding only ``lo`` (root: CLONE_NEWNET; otherwise a user
  namespace first, mapping our own uid/gid), so the enclave can only reach the parent through the
  emulated vsock (filesystem Unix sockets stay reachable from any network namespace);
* CPUs: sched_setaffinity to the host CPUs standing for its modelled CPU IDs (id mod host CPU count);
* memory: a cgroup v1 memory limit when root and the controller is mounted, else RLIMIT_AS with a
  floor, because an interpreter reserves far more address space than it touches.

:func:`child_setup` runs in the forked child before exec (Popen's preexec_fn); failures of optional
steps are tolerated there and the parent reports what the process really got (:func:`observe`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import resource
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
RLIMIT_AS_FLOOR_MIB = 1024
CGROUP_MEMORY_ROOT = Path("/sys/fs/cgroup/memory")


@dataclass(frozen=True)
class IsolationPlan:
    host_cpus: list[int]
    memory_mib: int
    cgroup: str | None  # cgroup v1 memory folder prepared by the parent, or None for RLIMIT_AS


def host_cpus_for(modelled: list[int]) -> list[int]:
    count = os.cpu_count() or 1
    return sorted({cpu % count for cpu in modelled})


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    # loaded in the parent (see prepare_child): dlopen() in a forked child of a threaded process can hang
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _LIBC


def prepare_child() -> None:
    """Call in the parent before fork: everything child_setup needs is loaded already."""
    _libc()


def unshare(flags: int) -> None:
    if _libc().unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _own_netns() -> None:
    if os.geteuid() == 0:
        unshare(CLONE_NEWNET)
    else:
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER | CLONE_NEWNET)
        with open("/proc/self/setgroups", "w") as fh:
            fh.write("deny")
        with open("/proc/self/uid_map", "w") as fh:
            fh.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as fh:
            fh.write(f"{gid} {gid} 1")
    bring_up_loopback()


def child_setup(plan: IsolationPlan) -> None:
    """In the child, before exec: own process group, cgroup, network namespace, affinity, limits."""
    os.setpgid(0, 0)
    if plan.cgroup:
        try:
            with open(os.path.join(plan.cgroup, "cgroup.procs"), "w") as fh:
                fh.write("0")
        except OSError:
            _rlimit(plan.memory_mib)
    else:
        _rlimit(plan.memory_mib)
    with contextlib.suppress(OSError):
        _own_netns()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, plan.host_cpus)


def _rlimit(memory_mib: int) -> None:
    limit = max(memory_mib, RLIMIT_AS_FLOOR_MIB) * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _own_memory_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return CGROUP_MEMORY_ROOT / path.lstrip("/")
    except (OSError, ValueError):
        return None
    return None


def prepare_cgroup(slot: str, memory_mib: int) -> str | None:
    """A child memory cgroup limited to the enclave's memory, or None when not possible here."""
    if os.geteuid() != 0:
        return None
    parent = _own_memory_cgroup()
    if parent is None or not (parent / "cgroup.procs").exists():
        return None
    path = parent / f"nitrodeck-{slot}"
    try:
        path.mkdir(exist_ok=True)
        (path / "memory.limit_in_bytes").write_text(str(memory_mib * 1024 * 1024))
    except OSError:
        remove_cgroup(str(path))
        return None
    return str(path)


def kill_cgroup(path: str) -> None:
    """SIGKILL every process in the cgroup: also those that left the enclave's process group."""
    try:
        pids = [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


def remove_cgroup(path: str, wait: float = 2.0) -> None:
    """Kill what is left in the cgroup and rmdir it; exiting processes may delay that, so retry briefly."""
    kill_cgroup(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _ns(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def observe(pid: int, plan: IsolationPlan) -> dict[str, Any]:
    """What isolation ``pid`` really has (emulator-describe's Isolation)."""
    try:
        affinity = sorted(os.sched_getaffinity(pid))
    except OSError:
        affinity = []
    limit: dict[str, Any]
    if plan.cgroup and _in_cgroup(pid, plan.cgroup):
        limit = {"Kind": "cgroup-v1", "Bytes": plan.memory_mib * 1024 * 1024}
    else:
        limit = {"Kind": "rlimit-as", "Bytes": max(plan.memory_mib, RLIMIT_AS_FLOOR_MIB) * 1024 * 1024}
    netns = _ns(pid, "net")
    userns = _ns(pid, "user")
    return {
        "NetworkNamespace": netns is not None and netns != _ns("self", "net"),
        "UserNamespace": userns is not None and userns != _ns("self", "user"),
        "HostCPUs": affinity,
        "MemoryLimit": limit,
    }


def _in_cgroup(pid: int, cgroup: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    rel = os.path.relpath(cgroup, CGROUP_MEMORY_ROOT)
    return any(line.endswith(":/" + rel) and "memory" in line for line in text.splitlines())
