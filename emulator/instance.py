"""The modelled parent instance (instance.yaml): vCPUs, cores, memory, NUMA, instance ID, IAM role.

The emulator never reads the host's topology for enclave decisions: a model keeps behaviour the same
on a 2-core CI box and a laptop. CPU numbering follows EC2: CPU n and n+cores are hyperthread siblings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import home
from core.errors import InputTooLarge, NitrodeckError
from core.yamlsafe import YamlRefused, load_yaml, short, yaml_error

MAX_INSTANCE_BYTES = 16 * 1024
MAX_VCPUS = 1024


class InstanceConfigError(NitrodeckError):
    """instance.yaml is unreadable or inconsistent."""

    code = "EMU-INSTANCE"


@dataclass(frozen=True)
class Instance:
    instance_id: str
    vcpus: int = 8
    cores: int = 4
    threads_per_core: int = 2
    memory_mib: int = 16384
    numa_nodes: int = 1
    iam_role_arn: str | None = None
    hugepage_sizes_kb: list[int] = field(default_factory=lambda: [1048576, 2048])
    #: memory the kernel can still turn into hugepages (None: all of it). Below the allocator's
    #: memory_mib it models fragmentation: the allocator then gets fewer pages than it asked for.
    hugepages_reservable_mib: int | None = None

    def core_of(self, cpu: int) -> int:
        return cpu % self.cores

    def siblings(self, cpu: int) -> list[int]:
        core = self.core_of(cpu)
        return [core + t * self.cores for t in range(self.threads_per_core)]

    def numa_node_of(self, cpu: int) -> int:
        return self.core_of(cpu) * self.numa_nodes // self.cores

    def to_yaml(self) -> str:
        import yaml  # written once per home; reading it back needs no PyYAML (core.yamlsafe)

        return yaml.safe_dump(asdict(self), sort_keys=False)


def new_instance_id() -> str:
    import secrets  # (and tempfile below) once per home: readers of instance.yaml skip the imports

    return "i-" + secrets.token_hex(9)[:17]


_INT_FIELDS = ("vcpus", "cores", "threads_per_core", "memory_mib", "numa_nodes")


def parse_instance(text: str, where: str = "instance.yaml") -> Instance:
    """Parse and check instance.yaml text. Unknown keys are rejected so typos do not pass silently."""
    if len(text.encode()) > MAX_INSTANCE_BYTES:
        raise InputTooLarge(f"larger than {MAX_INSTANCE_BYTES} bytes", where=where)
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise InstanceConfigError(f"not accepted: {exc}", where=where) from None
    except yaml_error() as exc:
        raise InstanceConfigError(f"not valid YAML: {exc}", where=where) from None
    if not isinstance(data, dict):
        raise InstanceConfigError("expected a mapping of settings", where=where)
    known = {"instance_id", "iam_role_arn", "hugepage_sizes_kb", "hugepages_reservable_mib", *_INT_FIELDS}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise InstanceConfigError(f"unknown key(s): {', '.join(unknown)}", where=where)
    values: dict[str, Any] = {}
    for key in _INT_FIELDS:
        if key in data:
            v = data[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InstanceConfigError(f"{key} must be a positive integer, got {short(v)}", where=where)
            values[key] = v
    iid = data.get("instance_id")
    if not isinstance(iid, str) or not iid.startswith("i-") or len(iid) > 64 or any(c.isspace() for c in iid):
        raise InstanceConfigError(f"instance_id must look like i-0123456789abcdef0, got {short(iid)}", where=where)
    values["instance_id"] = iid
    role = data.get("iam_role_arn")
    if role is not None and (not isinstance(role, str) or len(role) > 2048):
        raise InstanceConfigError("iam_role_arn must be a string (at most 2048 chars) or null", where=where)
    values["iam_role_arn"] = role
    if "hugepage_sizes_kb" in data:
        sizes = data["hugepage_sizes_kb"]
        if (
            not isinstance(sizes, list)
            or not sizes
            or len(sizes) > 8
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 2048 and s % 2048 == 0 for s in sizes)
        ):
            raise InstanceConfigError("hugepage_sizes_kb must list sizes in kB, multiples of 2048", where=where)
        values["hugepage_sizes_kb"] = sorted(set(sizes), reverse=True)
    if data.get("hugepages_reservable_mib") is not None:
        v = data["hugepages_reservable_mib"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InstanceConfigError(f"hugepages_reservable_mib must be a non-negative integer, got {v!r}", where=where)
        values["hugepages_reservable_mib"] = v
    inst = Instance(**values)
    if inst.vcpus > MAX_VCPUS:
        raise InstanceConfigError(f"vcpus above {MAX_VCPUS}", where=where)
    if inst.cores * inst.threads_per_core != inst.vcpus:
        raise InstanceConfigError(
            f"vcpus ({inst.vcpus}) must equal cores ({inst.cores}) x threads_per_core ({inst.threads_per_core})",
            where=where,
        )
    if inst.numa_nodes > inst.cores:
        raise InstanceConfigError("more NUMA nodes than cores", where=where)
    return inst


#: the instance ID of a model never written (read before first use, read-only): it has none yet
NO_INSTANCE_ID = ""


def load_instance(path: Path | None = None, *, create: bool = True) -> Instance:
    """The instance model, created with defaults (and a fresh instance ID) on first use.

    ``create=False`` (read-only): a missing file is the defaults in memory, with :data:`NO_INSTANCE_ID`
    (a fresh random ID on every read would be an instance that does not exist)."""
    path = path or home.emulator_instance_file()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_INSTANCE_BYTES + 1)
    except FileNotFoundError:
        return _create(path) if create else Instance(instance_id=NO_INSTANCE_ID)
    except OSError as exc:
        raise InstanceConfigError(f"cannot read: {exc.strerror}", where=str(path)) from None
    return parse_instance(raw.decode("utf-8", "replace"), where=str(path))


def _create(path: Path) -> Instance:
    inst = Instance(instance_id=new_instance_id())
    home.ensure(path.parent)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".instance-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(inst.to_yaml())
        try:
            # link() fails if another process won the race: then its instance ID is the one
            os.link(tmp, path)
        except FileExistsError:
            return load_instance(path)
    finally:
        os.unlink(tmp)
    return inst
