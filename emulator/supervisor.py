"""One supervisor process per enclave: nitro-cli's "enclave process", daemonized by run-enclave.

It takes the enclave's CPUs and hugepages from the shared table (emulator.state) under the lock,
starts the enclave process (emulator/enclave_init.py, isolated by emulator.isolation), waits for the
0xB7 boot heartbeat, reports back to run-enclave over the launch channel, and then serves describe /
terminate on its control socket until the enclave ends. Whatever happens, it gives back what it took:
the table entry, the cgroup, the runtime folder. The console file is kept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import home
from core.channel.unixsock import short_path
from core.errors import NitrodeckError
from emulator import control, state
from emulator.allocator import (
    MIN_ENCLAVE_MIB,
    AllocatorError,
    allocator_state,
    pages_mib,
    pick_pages,
)
from emulator.console import ConsoleWriter, console_file, prune_kept
from emulator.errors import EmuError
from emulator.instance import Instance, InstanceConfigError, load_instance
from emulator.isolation import (
    IsolationPlan,
    child_setup,
    host_cpus_for,
    kill_cgroup,
    observe,
    prepare_cgroup,
    prepare_child,
    remove_cgroup,
)
from emulator.logs import error_block, log_line, write_err_log

MAX_ENCLAVES = 4
FIRST_AUTO_CID = 16
MAX_CID = 0xFFFFFFFF
BOOT_TIMEOUT_CAP = 60.0
HOME_CHECK_INTERVAL = 5.0
#: how long run-enclave may take to confirm the result before the launch is rolled back
ACK_TIMEOUT = 30.0
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class LaunchSpec:
    """What run-enclave asks for (already checked for CLI-level errors: E01/E02/E03/E17)."""

    eif_path: str
    memory_mib: int
    cpu_count: int | None
    cpu_ids: list[int] | None
    cid: int
    debug: bool
    name: str | None
    #: run-enclave's working folder: nitro-cli's enclave process daemonizes without chdir, so a
    #: relative eif_path opens against the caller's folder (this process runs in "/")
    cwd: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LaunchSpec:
        try:
            spec = cls(
                eif_path=str(obj["eif_path"]),
                memory_mib=int(obj["memory_mib"]),
                cpu_count=None if obj.get("cpu_count") is None else int(obj["cpu_count"]),
                cpu_ids=None if obj.get("cpu_ids") is None else [int(c) for c in obj["cpu_ids"]],
                cid=int(obj.get("cid") or 0),
                debug=bool(obj.get("debug")),
                name=None if obj.get("name") is None else str(obj["name"]),
                cwd=None if obj.get("cwd") is None else str(obj["cwd"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmuError(code="E17", subactions=[f"bad launch request: {exc}"]) from None
        if spec.cpu_ids is not None and len(spec.cpu_ids) > 1024:
            raise EmuError(code="E17", subactions=["too many CPU IDs"])
        return spec


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def boot_timeout(eif_size: int, memory_mib: int) -> float:
    """nitro-cli's 90 s per started 6 GiB of EIF plus 90 s per started 100 GiB of memory, capped."""
    full = 90 * -(-eif_size // (6 * GIB)) + 90 * -(-memory_mib // (100 * 1024))
    return float(min(full, BOOT_TIMEOUT_CAP))


def new_enclave_id(instance_id: str) -> tuple[str, str]:
    slot = f"{(int(time.time() * 1000) << 16) | secrets.randbits(16):x}"
    return f"{''.join(instance_id.split())}-enc{slot}", slot


def module_id(enclave_id: str) -> str:
    """The attestation document's module_id: the enclave ID with the slot as 16 zero-padded hex digits
    (every real document has 16; the enclave ID nitro-cli prints uses ``{:x}`` and may have fewer)."""
    head, _, slot = enclave_id.rpartition("-enc")
    return f"{head}-enc{int(slot, 16):016x}"


def default_name(eif_path: str) -> str:
    base = os.path.basename(eif_path)
    while base.endswith(".eif"):
        base = base[: -len(".eif")]
    return base


def unique_name(wanted: str, taken: set[str]) -> str:
    if wanted not in taken:
        return wanted
    n = 1
    while f"{wanted}_{n}" in taken:
        n += 1
    return f"{wanted}_{n}"


# resource_manager.rs do_ioctl: the driver's errors, all E29; these texts go to the err log
IOCTL_TEXT = {
    "VCPU_NOT_IN_CPU_POOL": "The provided vCPU is not available in the CPU pool",
    "ENCLAVE_MEM_MIN_SIZE": "The enclave's memory size is lower than the minimum supported",
    "NO_VCPUS_ADDED": "The enclave cannot start because no vCPUs have been added",
    "FULL_CORES_NOT_USED": "The enclave cannot start because full CPU cores have not been set",
    "NO_CPUS_AVAIL_IN_POOL": "The enclave cannot be created because no CPUs are available in the pool",
    "INVALID_ENCLAVE_CID": "The provided enclave CID is invalid, being a well-known CID or the parent VM CID",
}


def ioctl_error(name: str, subaction: str) -> EmuError:
    return EmuError(code="E29", subactions=[subaction, IOCTL_TEXT.get(name, name)])


# aws-nitro-enclaves-image-format defs: EifHeader::size(), EifSectionHeader (type u16, flags u16, size u64,
# big-endian), the known section types (EifSectionInvalid=0 .. EifSectionMetadata=5), EifSectionSignature
EIF_HEADER_SIZE = 548
SECTION_HEADER = struct.Struct(">HHQ")
LAST_SECTION_TYPE = 5
SIGNATURE_SECTION = 4
#: section headers walked at most; a file of that many empty sections is left to the parse (E35)
MAX_WALKED_SECTIONS = 1 << 16


def signature_checker_error(fd: int) -> str | None:
    """image-format's PcrSignatureChecker::from_eif, which run-enclave runs after NE_CREATE_VM and
    before any memory is allocated (commands.rs): read the 548-byte header, then section headers one
    after the other from its end, each section skipped by its size, until a header cannot be read
    whole. A header that cannot be read, an unknown section type or a signature section that cannot be
    read or decoded fail it (E59); the text goes to the err log. None: it passes."""
    from core.eif.format import EifError
    from core.eif.signature import parse_signature_section

    try:
        if len(os.pread(fd, EIF_HEADER_SIZE, 0)) < EIF_HEADER_SIZE:
            return "Error while reading EIF header: failed to fill whole buffer"
        pos = EIF_HEADER_SIZE
        for _ in range(MAX_WALKED_SECTIONS):
            raw = os.pread(fd, SECTION_HEADER.size, pos)
            if len(raw) < SECTION_HEADER.size:
                return None
            kind, _flags, size = SECTION_HEADER.unpack(raw)
            if kind > LAST_SECTION_TYPE:
                return 'Error extracting EIF section header: "Invalid section type"'
            pos += SECTION_HEADER.size
            if kind == SIGNATURE_SECTION:
                data = os.pread(fd, min(size, 1 << 20), pos)
                if len(data) < size:
                    return "Error while reading signature section from EIF: failed to fill whole buffer"
                try:
                    parse_signature_section(data, pos)
                except EifError as exc:
                    return f"Error deserializing certificate: {exc.message}"
            pos += size
    except OSError as exc:
        return f"Error while reading EIF header: {exc.strerror}"
    return None


def check_cpu_request(spec: LaunchSpec, pool: list[int]) -> None:
    """cpu_info.rs get_cpu_config, against the pool file (ne_cpus): E20 duplicates, E21 not in the pool,
    E22 more CPUs than the pool holds (busy or not: the driver finds that out later)."""
    if spec.cpu_ids is not None:
        counts = Counter(spec.cpu_ids)
        dups = sorted(cpu for cpu, n in counts.items() if n > 1)
        if dups:
            # get_duplicate_cpus concatenates the IDs with nothing between them
            raise EmuError(code="E20", info=["cpu-ids", "".join(map(str, dups))])
        for cpu in sorted(counts):
            if cpu not in pool:
                raise EmuError(code="E21", info=["cpu-ids", str(cpu)])
    elif (spec.cpu_count or 0) > len(pool):
        raise EmuError(code="E22", info=["cpu-count", str(spec.cpu_count)])


def free_cores(inst: Instance, pool: list[int], used: set[int]) -> list[int]:
    """The driver's avail_threads_per_core: core IDs in ascending order whose threads are all free."""
    cores = sorted({inst.core_of(c) for c in pool})
    return [core for core in cores if not (set(inst.siblings(core)) & used)]


def add_vcpus(spec: LaunchSpec, inst: Instance, pool: list[int], used: set[int]) -> list[int]:
    """NE_ADD_VCPU per CPU, as ne_misc_dev.c answers it. With --cpu-count the driver hands out the
    remaining siblings of this enclave's cores first, else the lowest thread of the first free core;
    with --cpu-ids the given order is kept. The result is the order nitro-cli reports."""
    avail = free_cores(inst, pool, used)
    mine: list[int] = []  # cores given to this enclave, in the order taken
    cpus: list[int] = []
    if spec.cpu_ids is not None:
        for cpu in spec.cpu_ids:
            core = inst.core_of(cpu)
            if core not in mine:
                if core not in avail:
                    raise ioctl_error("VCPU_NOT_IN_CPU_POOL", f"Failed to add CPU with ID {cpu}")
                avail.remove(core)
                mine.append(core)
            cpus.append(cpu)
        return cpus
    for _ in range(spec.cpu_count or 0):
        spare = [c for core in sorted(mine) for c in inst.siblings(core) if c not in cpus]
        if spare:
            cpus.append(min(spare, key=lambda c: (inst.core_of(c), c)))
            continue
        if not avail:
            raise ioctl_error("NO_CPUS_AVAIL_IN_POOL", "Add vCPU ioctl failed")
        core = avail.pop(0)
        mine.append(core)
        cpus.append(min(inst.siblings(core)))
    return cpus


def check_start(inst: Instance, cpus: list[int], memory_mib: int) -> None:
    """NE_START_ENCLAVE's checks, in the driver's order."""
    if memory_mib < MIN_ENCLAVE_MIB:
        raise ioctl_error("ENCLAVE_MEM_MIN_SIZE", "Start enclave ioctl failed")
    if not cpus:
        raise ioctl_error("NO_VCPUS_ADDED", "Start enclave ioctl failed")
    for cpu in cpus:
        if not set(inst.siblings(cpu)) <= set(cpus):
            raise ioctl_error("FULL_CORES_NOT_USED", "Start enclave ioctl failed")


def choose_cid(wanted: int, used: set[int]) -> int:
    if wanted:
        if wanted in used:
            # the hypervisor refuses a CID that another enclave has; nitro-cli shows the errno it got
            raise EmuError(code="E29", subactions=["Start enclave ioctl failed", f"CID {wanted} is in use by another enclave"])
        return wanted
    cid = FIRST_AUTO_CID
    while cid in used:
        cid += 1
    return cid


class Supervisor:
    def __init__(self, chan: socket.socket) -> None:
        self.chan: socket.socket | None = chan
        self.entry: state.Entry | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: ConsoleWriter | None = None
        self.nsm_handle: Any = None
        self.plan: IsolationPlan | None = None
        self.measurements: dict[str, str] = {}
        self.identity: dict[str, Any] = {}
        self.control_sock: socket.socket | None = None
        self.eif: Any = None  # the private copy being launched (core.eif.format.EifFile)
        self.released = False
        #: when the boot heartbeat arrived (Unix time), for the exit record
        self.booted_at: float | None = None

    # --- launch channel -----------------------------------------------------------------------

    def tell(self, obj: dict[str, Any]) -> None:
        if self.chan is None:
            return
        try:
            control.send(self.chan, obj)
        except OSError:
            self.chan = None  # run-enclave went away; the enclave keeps running like nitro-cli's

    def _check_signature(self, eif: Any) -> None:
        """nitro-cli's PcrSignatureChecker, before anything is allocated: the COSE signature must verify
        with the certificate's key, cover this EIF's PCR0, and the certificate must be valid now."""
        from core.eif.sign import check_signature

        try:
            info = check_signature(eif, pcr0=self.measurements.get("PCR0"))
        except NitrodeckError as exc:
            raise EmuError(code="E59", subactions=[f"Signature check failed: {exc}"]) from None
        problem = info.problem if not info.ok else None if info.valid_now else "signing certificate is not valid now"
        if problem:
            raise EmuError(code="E59", subactions=["Failed to verify the EIF's PCR signature", problem])

    def progress(self, line: str) -> None:
        self.tell({"stderr": line + "\n"})

    # --- launch -------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> None:
        """nitro-cli's order of events (enclave_proc/commands.rs run_enclaves, resource_manager.rs):
        open the EIF; CPU checks against the pool file (E20/E21/E22); the 4x EIF size rule in bytes
        (E26); NE_CREATE_VM (slot limit, no free core: E29); the signature check (E59); then
        "Start allocating memory...", hugepages (E27), vCPUs and NE_START_ENCLAVE (E29), boot (E36)."""
        from core.eif.format import EifError, copy_private, eif_from_fd
        from core.eif.measure import measure

        eif_path = os.path.abspath(os.path.join(spec.cwd or "/", spec.eif_path))
        eif_fd: int | None = None
        if os.path.isdir(eif_path):
            # File::open opens a folder too; its size is the folder's, and reading it first fails in
            # the signature checker (E59, below)
            eif_size = os.stat(eif_path).st_size
            checker_error: str | None = "Error while reading EIF header: Is a directory (os error 21)"
        else:
            try:
                # one private copy is measured, signature-checked and unpacked: replacing the file at
                # eif_path during the launch cannot make the enclave attest one image and run another
                eif_fd = copy_private(eif_path, home.ensure(home.emulator_run_dir()))
            except EifError as exc:
                if exc.problem == "no space":
                    raise EmuError(code="E19", subactions=[f"cannot copy the EIF: {exc.message}"]) from None
                raise EmuError(
                    code="E19", info=[spec.eif_path, "Open"], subactions=[f"Failed to open the EIF file: {exc.message}"]
                ) from None
            eif_size = os.fstat(eif_fd).st_size
            checker_error = signature_checker_error(eif_fd)
        try:
            inst = load_instance()
            pools = allocator_state(inst)
            pool, hugepages = list(pools.cpu_pool), dict(pools.hugepages)
        except (AllocatorError, InstanceConfigError) as exc:
            self.progress(f"nitro-emu: the modelled instance or allocator is unusable: {exc}")
            raise EmuError(
                code="E19", info=["/sys/module/nitro_enclaves/parameters/ne_cpus", "Open"],
                subactions=["Failed to construct CPU information", str(exc)],
            ) from None
        check_cpu_request(spec, pool)
        # resource_manager.rs: requested_mem = memory_mib << 20 in a u64, so MiB beyond 2^44 wrap
        requested_mib = spec.memory_mib % (1 << 44)
        if 4 * eif_size > requested_mib * MIB:
            min_mib = ceil_div(ceil_div(eif_size, 1024), 1024) * 4  # resource_manager.rs, in MB as printed
            raise EmuError(
                code="E26",
                info=["memory", str(spec.memory_mib), str(min_mib)],
                subactions=[f"At least {min_mib} MB must be allocated (which is 4 times the EIF file size)"],
            )
        parse_error: str | None = None
        eif = None
        try:
            if eif_fd is None:
                raise NitrodeckError("the EIF path is a folder")
            eif = eif_from_fd(eif_fd, Path(eif_path))  # owns (and on failure closes) the copy
            self.eif = eif
            self.measurements = measure(eif).as_dict()
            from emulator.eifinfo import identity

            self.identity = identity(eif)
        except NitrodeckError as exc:
            parse_error = str(exc)
        enclave_id, slot = new_enclave_id(inst.instance_id)
        with state.locked() as table:
            live = table.entries
            for dead in table.reclaimed:
                log_line("nitro-cli", "WARN", f"reclaimed resources of dead enclave {dead.enclave_id}")
            used = {c for e in live for c in e.cpu_ids}
            # NE_CREATE_VM: the slot limit, then the driver's "no CPUs available in CPU pool"
            if len(live) >= MAX_ENCLAVES:
                raise EmuError(
                    code="E29",
                    subactions=["Create VM ioctl failed", f"no enclave slot left: {len(live)} of {MAX_ENCLAVES} in use"],
                )
            if not free_cores(inst, pool, used):
                raise ioctl_error("NO_CPUS_AVAIL_IN_POOL", "Create VM ioctl failed")
            if requested_mib == 0:
                # ResourceAllocator::new, reached with no memory only when the EIF is empty
                raise EmuError(
                    code="E26", info=["memory", "0"], subactions=["Create resource allocator", "Cannot start an enclave with no memory"]
                )
            if checker_error is not None:
                raise EmuError(code="E59", subactions=[f"Failed to create EIF signature checker: {checker_error}"])
            if eif is not None and eif.signature is not None:
                self._check_signature(eif)
            self.progress("Start allocating memory...")
            free = dict(hugepages)
            for e in live:
                for size, n in e.pages.items():
                    free[size] = free.get(size, 0) - n
            # allocate() counts what it still needs in an i64: from 2^63 bytes on it takes nothing, and
            # init_memory then finds 0 MB allocated
            pages = pick_pages(free, requested_mib) if requested_mib < 1 << 43 else requested_mib
            if isinstance(pages, int):
                raise EmuError(
                    code="E27",
                    info=["memory", str(requested_mib)],
                    subactions=["Failed to allocate enclave memory", f"Failed to allocate entire memory ({pages} MB remained)"],
                )
            memory = pages_mib(pages)
            if parse_error is not None:
                # on Nitro the hypervisor reads the EIF from enclave memory; the emulator must parse it
                self.progress(f"nitro-emu: the EIF cannot be read: {parse_error}")
                raise EmuError(code="E35", subactions=["Write EIF to enclave memory regions", parse_error])
            cpus = add_vcpus(spec, inst, pool, used)
            if spec.cid in (1, 2, 3) or spec.cid >= MAX_CID:
                # ne_misc_dev.c NE_START_ENCLAVE: well-known CIDs, the parent's and u32 max are refused
                raise ioctl_error("INVALID_ENCLAVE_CID", "Start enclave ioctl failed")
            check_start(inst, cpus, memory)
            cid = choose_cid(spec.cid, {e.cid for e in live})
            # lib.rs new_enclave_name: a given name is used as it is, an empty one too
            name = unique_name(default_name(eif_path) if spec.name is None else spec.name, {e.name for e in live})
            me = os.getpid()
            self.entry = state.Entry(
                enclave_id=enclave_id,
                name=name,
                cid=cid,
                supervisor_pid=me,
                supervisor_start=state.proc_start_time(me),
                cpu_ids=cpus,
                memory_mib=memory,
                pages=pages,
                debug=spec.debug,
                eif_path=eif_path,
                slot=slot,
            )
            table.add(self.entry)
        log_line(f"enc-{slot}", "INFO", f"allocated cpus {cpus}, {memory} MiB, cid {cid} for {enclave_id}")
        assert eif is not None  # parse_error raised E35 above
        self.boot(inst, eif, eif_size)
        self.progress(f"Started enclave with enclave-cid: {cid}, memory: {memory} MiB, cpu-ids: [{', '.join(map(str, cpus))}]")
        self.tell({"result": self.run_info()})
        self.await_ack()

    def await_ack(self) -> None:
        """run-enclave confirms it has the result. If it died at any stage of the launch (kill -9), its
        caller was told the launch failed, so the enclave must not run: it is rolled back here."""
        chan, self.chan = self.chan, None
        ok = False
        if chan is not None:
            try:
                chan.settimeout(ACK_TIMEOUT)
                ok = bool(control.recv(chan).get("ack"))
            except (OSError, NitrodeckError):
                ok = False
            finally:
                chan.close()
        if not ok:
            raise EmuError(
                code="E36",
                subactions=["run-enclave went away before it reported the enclave as started; the enclave was terminated"],
            )

    def boot(self, inst: Instance, eif: Any, eif_size: int) -> None:
        from core.eif.build import read_image_spec

        entry = self.entry
        assert entry is not None
        runtime = home.ensure(state.slot_dir(entry.slot))
        try:
            # unpacked from the private copy that was measured (never re-opened by path)
            spec = read_image_spec(eif, runtime / "rootfs")
        except NitrodeckError as exc:
            raise EmuError(code="E35", subactions=[f"cannot unpack the customer ramdisk: {exc}"]) from None
        except OSError as exc:  # a full disk is a file operation failure, not a boot failure
            raise EmuError(
                code="E19", subactions=[f"cannot unpack the customer ramdisk into {runtime}: {exc.strerror or exc}"]
            ) from None
        finally:
            eif.close()
        rootfs = Path(spec.rootfs)
        cmd = [rewrite_path(arg, rootfs) for arg in spec.cmd]
        if not cmd:
            raise EmuError(code="E36", subactions=["the image has no command to run"])
        # control socket before the enclave starts, so describe/terminate work from the first moment
        self.control_sock = listen_unix(runtime / "control.sock")
        boot_sock = listen_unix(runtime / "boot.sock")
        env = image_env(spec.env, rootfs)
        env.update(
            {
                "NITRODECK_HOME": str(home.home()),
                "NITRODECK_VSOCK_DIR": str(home.emulator_vsock_dir()),
                "NITRODECK_ENCLAVE_CID": str(entry.cid),
                "NITRODECK_ENCLAVE_ID": entry.enclave_id,
                # the emulator's interpreter first: an image's `python3` is the one with nitrodeck's packages
                "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]),
            }
        )
        nsm_path = runtime / "nsm.sock"
        if nsm_available():
            env["NITRODECK_NSM_SOCKET"] = str(nsm_path)
        home.ensure(home.emulator_vsock_dir())
        # Nitro has a console only for debug-mode enclaves: the others' output is drained and dropped
        self.console = ConsoleWriter(console_file(entry.enclave_id) if entry.debug else Path(os.devnull))
        prune_kept({e.enclave_id for e in state.read_entries()} | {entry.enclave_id})
        cgroup = prepare_cgroup(entry.slot, entry.memory_mib)
        self.plan = IsolationPlan(host_cpus=host_cpus_for(entry.cpu_ids), memory_mib=entry.memory_mib, cgroup=cgroup)
        init = Path(__file__).with_name("enclave_init.py")
        argv = [sys.executable, "-I", str(init), str(runtime / "boot.sock"), str(rootfs), "--", *cmd]
        plan = self.plan
        read_end, write_end = os.pipe()
        prepare_child()
        try:
            # threads (console pump, NSM server) start only after this fork
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                env=env,
                cwd=str(runtime),
                preexec_fn=lambda: child_setup(plan),
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(read_end)
            raise EmuError(code="E36", subactions=[f"cannot start the enclave process: {exc}"]) from None
        finally:
            os.close(write_end)
        self.console.pump(read_end)
        if "NITRODECK_NSM_SOCKET" in env:
            self.start_nsm(inst, nsm_path)
        with state.locked(reclaim=False) as table:
            entry.enclave_pid = self.proc.pid
            entry.enclave_start = state.proc_start_time(self.proc.pid)
            entry.cgroup = cgroup
            table.update(entry)
        try:
            self.wait_heartbeat(boot_sock, boot_timeout(eif_size, entry.memory_mib))
        finally:
            boot_sock.close()
        self.booted_at = time.time()
        with state.locked(reclaim=False) as table:
            entry.started = True
            entry.extra = {"isolation": observe(self.proc.pid, plan)}
            table.update(entry)

    def start_nsm(self, inst: Instance, path: Path) -> None:
        """The enclave's NSM; its app connects only after the boot heartbeat, so starting now is in time."""
        from emulator.nsm import EmulatedNsm, start_nsm_server

        entry = self.entry
        assert entry is not None
        pcrs = {int(k[3:]): bytes.fromhex(v) for k, v in self.measurements.items() if k.startswith("PCR")}
        nsm = EmulatedNsm(
            module_id=module_id(entry.enclave_id),
            pcrs=pcrs,
            debug=entry.debug,
            instance_id=inst.instance_id,
            role_arn=inst.iam_role_arn,
        )
        cid, vsock_dir = entry.cid, home.emulator_vsock_dir()

        def ours(pid: int) -> bool:
            # the enclave's own processes only (its netns or process group, as registered at the boot
            # heartbeat): another enclave asking here would get documents with this enclave's PCRs
            from core.channel import vsock_peers

            return vsock_peers.cid_of_pid(vsock_dir, pid) == cid

        self.nsm_handle = start_nsm_server(nsm, path, peer_allowed=ours)

    def wait_heartbeat(self, listener: socket.socket, timeout: float) -> None:
        """Accept init's connection and echo 0xB7; fail at once if init exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(listener, selectors.EVENT_READ, "boot")
                sel.register(pidfd, selectors.EVENT_READ, "exit")
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise EmuError(code="E36", subactions=[f"no boot heartbeat within {timeout:.0f} s"])
                    for key, _ in sel.select(left):
                        if key.data == "exit":
                            code = self.proc.wait()
                            raise EmuError(
                                code="E36",
                                subactions=[f"the enclave's init exited with status {code} before its boot heartbeat"],
                            )
                        conn, _ = listener.accept()
                        with conn:
                            conn.settimeout(2.0)
                            try:
                                if conn.recv(1) == b"\xb7":
                                    # init has its namespaces now and runs the image's command only
                                    # after our answer: register the enclave's identity first, so its
                                    # very first vsock connection already has the right CID
                                    self.register_vsock_identity()
                                    conn.sendall(b"\xb7")
                                    return
                            except OSError:
                                continue
        finally:
            os.close(pidfd)

    def register_vsock_identity(self) -> None:
        from core.channel import vsock_peers

        assert self.entry is not None and self.proc is not None
        ident = vsock_peers.identity_for(self.entry.cid, self.proc.pid)
        vsock_peers.register(home.emulator_vsock_dir(), ident)

    # --- running ------------------------------------------------------------------------------

    def run_info(self) -> dict[str, Any]:
        e = self.entry
        assert e is not None
        return {
            "EnclaveName": e.name,
            "EnclaveID": e.enclave_id,
            "ProcessID": e.supervisor_pid,
            "EnclaveCID": e.cid,
            "NumberOfCPUs": len(e.cpu_ids),
            "CPUIDs": e.cpu_ids,
            "MemoryMiB": e.memory_mib,
        }

    def describe(self) -> dict[str, Any]:
        e = self.entry
        assert e is not None and self.proc is not None and self.plan is not None
        out = self.run_info()
        out["State"] = "RUNNING"
        out["Flags"] = "DEBUG_MODE" if e.debug else "NONE"
        out["Measurements"] = self.measurements
        reply: dict[str, Any] = {
            "info": out,
            "identity": self.identity,
            "isolation": observe(self.proc.pid, self.plan),
        }
        if self.console is not None and self.console.dropped_bytes:
            # output the console file could not take (full disk): the enclave kept running
            reply["console"] = {"DroppedBytes": self.console.dropped_bytes, "LastError": self.console.last_error}
        return reply

    def serve(self) -> None:
        """Answer control requests until the enclave ends or is terminated."""
        assert self.proc is not None and self.control_sock is not None
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.control_sock, selectors.EVENT_READ, "control")
                sel.register(pidfd, selectors.EVENT_READ, "exit")
                while True:
                    events = sel.select(timeout=HOME_CHECK_INTERVAL)
                    if not events and self.entry is not None and not state.slot_dir(self.entry.slot).exists():
                        # our home was deleted: nobody can reach or terminate this enclave any more
                        log_line(f"enc-{self.entry.slot}", "WARN", "runtime folder removed; terminating")
                        return
                    if not events and self.entry is not None:
                        self.keep_record()
                    for key, _ in events:
                        if key.data == "exit":
                            log_line(f"enc-{self.entry.slot if self.entry else '?'}", "INFO", "enclave process exited")
                            self._record_exit()
                            return
                        conn, _ = self.control_sock.accept()
                        if not self.from_parent(conn):
                            conn.close()  # an enclave (this one or another) never controls a supervisor
                            continue
                        if self.handle(conn):
                            return
        finally:
            os.close(pidfd)

    def from_parent(self, conn: socket.socket) -> bool:
        """The client is a parent-side process: every enclave runs as our host user, so the socket's
        file mode cannot keep another enclave from sending terminate; the peer registry can."""
        from core.channel import vsock_peers

        pid = vsock_peers.peer_pid(conn)
        return pid > 0 and vsock_peers.cid_of_pid(home.emulator_vsock_dir(), pid) is None

    def keep_record(self) -> None:
        """Put our entry back if the table or our record was edited (state never lies for long)."""
        entry = self.entry
        assert entry is not None
        try:
            listed = next((e for e in state.read_entries() if e.enclave_id == entry.enclave_id), None)
            record = state.read_record(entry.slot)
            if listed is not None and record is not None and record.to_json() == entry.to_json():
                return
            with state.locked(reclaim=False) as table:
                if table.get(entry.enclave_id) is None:
                    table.add(entry)
                else:
                    table.update(entry)
            log_line(f"enc-{entry.slot}", "WARN", "the enclave table or this enclave's record was edited; restored")
        except (OSError, NitrodeckError):
            return  # tried again at the next tick

    def _record_exit(self) -> None:
        """The enclave ended on its own: keep its exit status and time for nitrodeck's journal."""
        from emulator.exits import record_exit

        if self.entry is None or self.proc is None:
            return
        record_exit(self.entry.enclave_id, self.proc.poll(), self.booted_at)

    def handle(self, conn: socket.socket) -> bool:
        """One request; True when the supervisor should stop."""
        with conn:
            # requests are served one at a time; a client that stalls mid-frame holds the others only briefly
            conn.settimeout(2.0)
            try:
                cmd, deadline = control.parse_request_full(control.recv_body(conn))
            except (OSError, NitrodeckError) as exc:
                with contextlib.suppress(OSError, NitrodeckError):
                    control.send(conn, {"error": str(exc)})
                return False
            if (deadline is not None and time.time() > deadline) or client_gone(conn):
                # the client gave up (we were stopped, or slow): it has reported a failure, so acting
                # now would make that report a lie (a terminate --all that returned [] running later)
                log_line(f"enc-{self.entry.slot if self.entry else '?'}", "WARN", f"ignored an expired {cmd} request")
                return False
            try:
                if cmd == "ping":
                    control.send(conn, {"ok": True})
                elif cmd == "describe":
                    control.send(conn, self.describe())
                elif cmd == "terminate":
                    info = {"EnclaveName": self.entry.name, "EnclaveID": self.entry.enclave_id} if self.entry else {}
                    self.release()
                    control.send(conn, {"terminated": info})
                    return True
            except OSError:
                return cmd == "terminate"
        return False

    # --- teardown -----------------------------------------------------------------------------

    def release(self) -> None:
        """Stop the enclave and give back everything; idempotent."""
        if self.released:
            return
        self.released = True
        if self.plan is not None and self.plan.cgroup:
            kill_cgroup(self.plan.cgroup)
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            else:
                # the init may be gone while children it left in the group live on
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        if self.console is not None:
            self.console.close()
        if self.nsm_handle is not None:
            with contextlib.suppress(Exception):
                self.nsm_handle.close()
        if self.control_sock is not None:
            self.control_sock.close()
        if self.plan is not None and self.plan.cgroup:
            remove_cgroup(self.plan.cgroup)
        if self.entry is not None:
            import shutil

            from core.channel import vsock_peers

            # the enclave's vsock folder (the CID is ours alone): its record and any socket files it left
            vsock_peers.unregister(home.emulator_vsock_dir(), self.entry.cid)
            if home.emulator_run_dir().exists():  # a deleted home is not brought back just to unlist us
                # unlisted (entry and our record) before the folder goes: no reader sees one without the other
                with state.locked(reclaim=False) as table:
                    table.remove(self.entry.enclave_id)
            shutil.rmtree(state.slot_dir(self.entry.slot), ignore_errors=True)
            log_line(f"enc-{self.entry.slot}", "INFO", f"released resources of {self.entry.enclave_id}")


def client_gone(conn: socket.socket) -> bool:
    """True when the client has closed its end (it stopped waiting for our answer)."""
    import select

    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    for _fd, events in poller.poll(0):
        if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
    return False


def nsm_available() -> bool:
    """emulator.nsm is someone else's module and optional: without it enclaves run without an NSM."""
    try:
        import emulator.nsm  # noqa: F401
    except ImportError:
        return False
    return True


def rewrite_path(value: str, rootfs: Path) -> str:
    """An absolute path that exists in the rootfs points at the rootfs copy (``/app`` -> <rootfs>/app)."""
    if value.startswith("/") and ":" not in value:
        inside = rootfs / value.lstrip("/")
        if value != "/" and os.path.lexists(inside):
            return str(inside)
    return value


def image_env(pairs: list[str] | dict[str, str], rootfs: Path) -> dict[str, str]:
    items = pairs.items() if isinstance(pairs, dict) else (p.split("=", 1) for p in pairs if "=" in p)
    out: dict[str, str] = {}
    for key, value in items:
        out[key] = ":".join(rewrite_path(part, rootfs) for part in value.split(":"))
    return out


def listen_unix(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(short_path(path))
    sock.listen(16)
    return sock


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds into release(): SIGTERM to a supervisor terminates its enclave cleanly


def main(argv: list[str]) -> int:
    """``python -m emulator.supervisor FD``: FD is the launch channel from run-enclave."""
    chan = socket.socket(fileno=int(argv[0]))
    sup = Supervisor(chan)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        spec = LaunchSpec.from_json(control.recv(chan))
        sup.launch(spec)
    except EmuError as err:
        log_path = write_err_log(err, "Run Enclave")
        reason = "; ".join(err.subactions) or err.message.splitlines()[0]
        log_line("enc", "ERROR", f"run-enclave failed with {err.code}: {reason}")
        sup.release()
        sup.tell({"error": error_block(err, log_path), "code": err.code})
        return 1
    except BaseException as exc:  # noqa: BLE001 - report anything to run-enclave, then clean up
        failure = EmuError(code="E36", subactions=[f"supervisor failure: {type(exc).__name__}: {exc}"])
        log_path = write_err_log(failure, "Run Enclave")
        sup.release()
        sup.tell({"error": error_block(failure, log_path), "code": failure.code})
        return 1
    try:
        sup.serve()
    except SystemExit:
        pass
    finally:
        sup.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
