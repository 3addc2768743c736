"""What nitrodeck can check before it asks nitro-cli: the cause, named, instead of a bare error code.

nitro-cli answers a launch that cannot work with one of a few codes (E29 covers every driver
refusal: a CID in use, a CPU another enclave holds, half a core...), and the cause is only in its
error log. Much of it nitrodeck knows already from describe-enclaves, the CPU pool, the hugepages
and the EIF, so :func:`check_launch` refuses such a launch first, with a message naming the conflict
(and the enclave holding what was asked for). It only refuses what it is sure of: when the pools are
unknown (an allocator error, no sysfs) those checks are skipped and nitro-cli decides.
"""

from __future__ import annotations

import math
from typing import Any

from core.errors import NitrodeckError
from core.models import EnclaveInfo, LaunchRequest
from core.ops.resources import Resources

#: ENCLAVE_MEMORY_EIF_SIZE_RATIO in nitro-cli's resource manager
EIF_SIZE_RATIO = 4
_MIB = 1024 * 1024


class LaunchConflict(NitrodeckError):
    """A launch refused before nitro-cli ran; ``cli_code`` is the code nitro-cli would have given."""

    code = "ND-LAUNCH"

    def __init__(self, message: str, *, cli_code: str, hint: str | None = None, where: str | None = None) -> None:
        super().__init__(message, hint=hint, where=where)
        self.cli_code = cli_code
        # the same exit status nitro-cli would have exited with, so scripts keep working
        self.exit_status = int(cli_code.lstrip("E"))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["nitro_cli_code"] = self.cli_code
        return out


class DockerUnreachable(NitrodeckError):
    code = "ND-DOCKER"
    exit_status = 50  # what nitro-cli exits with when it cannot get the image


def _who(enclave: EnclaveInfo) -> str:
    return f"{enclave.label} ({enclave.enclave_id})" if enclave.name else enclave.enclave_id


def check_launch(req: LaunchRequest, enclaves: list[EnclaveInfo], resources: Resources | None, eif_size: int) -> None:
    running = [e for e in enclaves if e.state.upper() in ("RUNNING", "TERMINATING")]
    if req.cid:
        holder = next((e for e in running if e.cid == req.cid), None)
        if holder is not None:
            raise LaunchConflict(
                f"CID {req.cid} is used by the running enclave {_who(holder)}",
                cli_code="E29",
                where="launch --cid",
                hint="choose another CID, or leave --cid out and a free one is picked",
            )
    # resource_manager.rs refuses exactly when 4 x the EIF's bytes exceed the memory's bytes; the least
    # memory it accepts is that, rounded up to a MiB (its message rounds the EIF up to a MiB first,
    # which would refuse launches nitro-cli runs)
    if EIF_SIZE_RATIO * eif_size > req.memory_mib * _MIB:
        need = math.ceil(EIF_SIZE_RATIO * eif_size / _MIB)
        raise LaunchConflict(
            f"memory {req.memory_mib} MiB is less than {EIF_SIZE_RATIO}x the EIF size "
            f"({eif_size / _MIB:.1f} MiB): this EIF needs at least {need} MiB",
            cli_code="E26",
            where="launch --memory",
            hint=f"launch with --memory {need} or more",
        )
    if resources is None:
        return
    _check_cpus(req, running, resources)
    pages = resources.hugepages
    # no hugepages reserved at all is not knowledge about this launch (a host without the allocator):
    # nitro-cli says what it says
    if pages and not resources.problem and sum(p.total for p in pages) > 0:
        free = sum(p.free_mib for p in pages)
        if req.memory_mib > free:
            holders = ", ".join(f"{_who(e)}: {e.memory_mib} MiB" for e in running) or "no enclave holds any"
            raise LaunchConflict(
                f"memory {req.memory_mib} MiB is more than the {free} MiB of free hugepages ({holders})",
                cli_code="E27",
                where="launch --memory",
                hint="launch with less --memory, terminate an enclave, or reserve more hugepages (allocator.yaml)",
            )


def _check_cpus(req: LaunchRequest, running: list[EnclaveInfo], resources: Resources) -> None:
    cpus = resources.cpus
    if resources.problem or not cpus.pool:
        return  # the pool is unknown: nitro-cli decides
    holders = {cpu: e for e in running for cpu in e.cpu_ids}
    if req.cpu_ids:
        seen: set[int] = set()
        for cpu in req.cpu_ids:
            if cpu in seen:
                raise LaunchConflict(f"CPU {cpu} is listed twice", cli_code="E20", where="launch --cpu-ids")
            seen.add(cpu)
        outside = [c for c in req.cpu_ids if c not in cpus.pool]
        if outside:
            raise LaunchConflict(
                f"CPU {outside[0]} is not in the enclave CPU pool {_ranges(cpus.pool)}",
                cli_code="E21",
                where="launch --cpu-ids",
                hint="use CPUs from the pool (see `nitrodeck status`), or add it to cpu_pool in allocator.yaml",
            )
        busy = [c for c in req.cpu_ids if c in holders]
        if busy:
            raise LaunchConflict(
                f"CPU {busy[0]} is held by the running enclave {_who(holders[busy[0]])}",
                cli_code="E29",
                where="launch --cpu-ids",
                hint=f"free CPUs now: {_ranges(cpus.free) or 'none'}; or use --cpu-count",
            )
    elif req.cpu_count is not None:
        if req.cpu_count > len(cpus.pool):
            raise LaunchConflict(
                f"{req.cpu_count} CPUs asked for, but the enclave CPU pool has only {len(cpus.pool)}",
                cli_code="E22",
                where="launch --cpu-count",
                hint="ask for fewer CPUs, or enlarge cpu_count/cpu_pool in allocator.yaml",
            )
        free = [c for c in cpus.pool if c not in holders]
        if req.cpu_count > len(free):
            held = ", ".join(f"{_who(e)}: {_ranges(e.cpu_ids)}" for e in running if e.cpu_ids)
            raise LaunchConflict(
                f"{req.cpu_count} CPUs asked for, but only {len(free)} of the pool's {len(cpus.pool)} are free "
                f"(held: {held})",
                cli_code="E29",
                where="launch --cpu-count",
                hint="terminate an enclave or ask for fewer CPUs",
            )


def _ranges(ids: list[int]) -> str:
    return ",".join(str(c) for c in sorted(ids))


def docker_silence(timeout: float = 5.0) -> str | None:
    """Why no Docker daemon answers at DOCKER_HOST (or the default socket), or None when one does (or
    when the SDK to ask with is missing: then nothing is known, and nitro-cli asks for itself)."""
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a dependency
        return None
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure to answer means: no usable daemon
        return str(exc)[:200]
    return None


def check_docker(timeout: float = 5.0) -> None:
    """Refuse a Docker build up front when no Docker daemon answers (nitro-cli would say E48/E50)."""
    why = docker_silence(timeout)
    if why is not None:
        raise DockerUnreachable(
            f"the Docker daemon does not answer: {why}",
            where="build --docker-uri",
            hint="start Docker (`sudo systemctl start docker`) or point DOCKER_HOST at a running daemon",
        )
