"""Who is at the other end of an emulated vsock connection: the emulator's word, not the peer's.

On Nitro the hypervisor stamps every vsock connection with the peer's CID; an enclave cannot claim
another one. Under the emulator the connection is a Unix socket, so the CID of the process at the
other end is worked out from the kernel's SO_PEERCRED (the peer's PID) and the emulator's registry:
each enclave's supervisor writes ``<vsock_dir>/<cid>/.enclave`` before the enclave's init may run
its command, naming the enclave's network namespace (every enclave has its own) and process group.
A process inside a registered enclave's namespace (or, when the namespace could not be made, its
process group) has that enclave's CID; any other process is on the parent instance, CID 3.

Limits, said plainly: the enclaves run as the same host user as the emulator, so a payload that
writes the emulator's files directly can still forge this registry; what the registry stops is the
cheap trick of stating another CID in the connection header, or binding another CID's port.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

REGISTRY_FILE = ".enclave"
_MAX_RECORD = 4096


@dataclass(frozen=True)
class EnclaveIdentity:
    cid: int
    pgid: int  # the enclave init's PID, which leads its process group
    start: int  # the init's kernel start time: a reused PID is not taken for the enclave
    netns: str | None  # "net:[4026532...]", None when the enclave shares the host's namespace


def proc_start_time(pid: int) -> int:
    """Kernel start time of ``pid`` (clock ticks since boot), 0 when there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return 0
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return 0
    try:
        return int(fields[19])
    except ValueError:
        return 0


def netns_of(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def identity_for(cid: int, pid: int) -> EnclaveIdentity:
    """The identity of the enclave whose init is ``pid`` (called by its supervisor)."""
    ns = netns_of(pid)
    own = netns_of("self")
    return EnclaveIdentity(cid=cid, pgid=pid, start=proc_start_time(pid), netns=ns if ns != own else None)


def register(vsock_dir: Path, identity: EnclaveIdentity) -> None:
    """Write the enclave's record (atomically), clearing whatever a dead predecessor left in its folder."""
    folder = vsock_dir / str(identity.cid)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.iterdir():
        if leftover.name != REGISTRY_FILE:
            with contextlib.suppress(OSError):
                leftover.unlink()
    import tempfile  # (and shutil below) registering and unregistering only, not every reader

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".enclave-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(identity), fh)
    os.replace(tmp, folder / REGISTRY_FILE)


def unregister(vsock_dir: Path, cid: int) -> None:
    """The enclave ended: its record and every socket file it left go (nothing stale stays behind)."""
    import shutil

    shutil.rmtree(vsock_dir / str(cid), ignore_errors=True)


def _read(path: Path) -> EnclaveIdentity | None:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(_MAX_RECORD))
        ident = EnclaveIdentity(
            cid=int(data["cid"]),
            pgid=int(data["pgid"]),
            start=int(data["start"]),
            netns=None if data.get("netns") is None else str(data["netns"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ident if ident.cid == int(path.parent.name) else None


def live_enclaves(vsock_dir: Path) -> dict[int, EnclaveIdentity]:
    """CID -> identity of every registered enclave whose init still runs."""
    out: dict[int, EnclaveIdentity] = {}
    try:
        folders = [f for f in os.scandir(vsock_dir) if f.name.isdigit()]
    except OSError:
        return out
    for folder in folders:
        ident = _read(Path(folder.path) / REGISTRY_FILE)
        if ident is not None and ident.start and proc_start_time(ident.pgid) == ident.start:
            out[ident.cid] = ident
    return out


def cid_of_pid(vsock_dir: Path, pid: int, enclaves: dict[int, EnclaveIdentity] | None = None) -> int | None:
    """The CID of the enclave ``pid`` runs in, or None for a process of the parent instance."""
    enclaves = live_enclaves(vsock_dir) if enclaves is None else enclaves
    if not enclaves:
        return None
    ns = netns_of(pid)
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = -1
    for ident in enclaves.values():
        if ident.netns is not None:
            if ns == ident.netns:
                return ident.cid
        elif pgid == ident.pgid:
            return ident.cid
    return None


def peer_pid(sock: socket.socket) -> int:
    """The PID the kernel recorded for the other end of a connected Unix socket (0 if unknown)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    pid, _uid, _gid = struct.unpack("3i", raw)
    return pid
