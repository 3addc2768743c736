"""The doctor's inputs for the selected backend: the host's, or the emulator's model in the same shape.

core/ops/doctor.py never imports the emulator (layer rule); this module is the caller that reads
emulator/instance.py and emulator/allocator.py and hands their model over as core's plain views.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from core import home
from core.backends.base import Backend
from core.errors import NitrodeckError
from core.ops.doctor import (
    PROBE_TIMEOUT,
    AllocatorView,
    DoctorInputs,
    MachineView,
    default_metadata_url,
    host_inputs,
    parse_allocator_request,
)
from core.ops.resources import HugepagePool


def emulator_inputs(
    backend: Backend,
    metadata_url: str | None = None,
    timeout: float = PROBE_TIMEOUT,
    time_url: str | None = None,
    *,
    read_only: bool = False,
) -> DoctorInputs:
    """The emulator's model (instance.yaml, allocator.yaml and the pools it derives) as doctor inputs.
    ``read_only``: nothing is written to read it (a world never set up is checked on its defaults)."""
    from core.channel.proxy import default_config
    from emulator import allocator, kms
    from emulator.instance import load_instance

    machine: MachineView | None = None
    try:
        inst = load_instance(create=not read_only)
        machine = MachineView(
            "emulator-model", inst.vcpus, inst.threads_per_core, inst.memory_mib, inst.numa_nodes, inst.instance_id,
            cores=tuple(tuple(inst.siblings(c)) for c in range(inst.cores)),
            cpu_nodes=tuple(inst.numa_node_of(c) for c in range(inst.vcpus)),
            # the model splits memory evenly between its nodes, as its allocator reserves from one
            node_memory_mib=(inst.memory_mib // inst.numa_nodes,) * inst.numa_nodes,
        )
    except NitrodeckError as exc:
        inst = None
        model_error: str | None = str(exc).splitlines()[0]
    else:
        model_error = None
    config = allocator.allocator_file()
    requested_mem = requested_count = None
    requested_pool: list[int] | None = None
    config_error: str | None = None
    try:
        # read as a Nitro parent's doctor reads /etc/nitro_enclaves/allocator.yaml: the same parser
        text, where = allocator.read_allocator_file(config, create=not read_only)
        requested_mem, requested_count, requested_pool = parse_allocator_request(text.encode(), where)
    except NitrodeckError as exc:
        config_error = str(exc).splitlines()[0]
    pages: list[HugepagePool] = []
    pool: list[int] = []
    # without a machine model the emulated allocator cannot start: the instance check says why
    state, detail = "failed", config_error or f"no machine model to allocate from: {model_error}"
    if inst is not None:
        try:
            snap = allocator.snapshot(read_only=read_only)
        except NitrodeckError as exc:
            detail = f"nitro-emu allocator: {exc}"
        else:
            pages = [HugepagePool(u.size_kb, u.node, u.total, u.free, u.held, "emulator-model") for u in snap.hugepages]
            pool = list(snap.pool_cpus)
            if snap.error:
                detail = f"nitro-emu allocator refused {config}: {snap.error}"
            else:
                state, detail = "active", f"nitro-emu allocator model: {snap.pool_memory_mib} MiB, CPUs {pool}"
    view = AllocatorView(
        state,
        detail,
        str(config),
        requested_mem,
        requested_count,
        requested_pool,
        config_error,
        pages,
        pool,
        # the model moves every pool CPU away from the parent, as the driver offlines them
        list(pool),
        inst.numa_node_of(pool[0]) if (inst is not None and pool) else None,
    )
    kms_target = None
    local_kms = kms.read_endpoint_file()
    if local_kms:
        parts = urlsplit(local_kms)
        kms_target = (parts.hostname or "127.0.0.1", parts.port or 80)
    return DoctorInputs(
        backend="emulator",
        home=home.home(),
        machine=machine,
        machine_error=model_error,
        machine_fix=f"edit {home.emulator_instance_file()}, or remove it (nitro-emu writes the default model again)",
        allocator=view,
        device=home.emulator_run_dir(),
        device_is_char=False,
        nitro_cli=tuple(backend.argv),
        vsock_proxy_state="inactive",
        vsock_proxy_config=default_config(True),
        kms_target=kms_target,
        docker_host=os.environ.get("DOCKER_HOST"),
        metadata_url=metadata_url or default_metadata_url("emulator"),
        # the local KMS, when one runs, is the emulator's KMS endpoint: the same second time source
        time_url=time_url or local_kms,
        timeout=timeout,
    )


def doctor_inputs(
    backend: Backend,
    metadata_url: str | None = None,
    timeout: float = PROBE_TIMEOUT,
    time_url: str | None = None,
    *,
    read_only: bool = False,
) -> DoctorInputs:
    """``read_only``: gather them without writing anything (the emulator's model is not created)."""
    if backend.is_emulator:
        return emulator_inputs(backend, metadata_url, timeout, time_url, read_only=read_only)
    return host_inputs(
        home.home(), root=Path("/"), metadata_url=metadata_url, timeout=timeout, nitro_cli=tuple(backend.argv),
        time_url=time_url,
    )
