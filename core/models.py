"""Dataclasses for what crosses module boundaries: nitro-cli's JSON shapes, parsed once, used everywhere.

Parsers are tolerant of older nitro-cli versions (no EnclaveName before 1.2.0, no Measurements) and
strict about types: a wrong type raises :class:`OutputFormatError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import NitrodeckError

HASH_ALGORITHM = "Sha384 { ... }"
ZERO_PCR = "0" * 96


class OutputFormatError(NitrodeckError):
    """nitro-cli printed JSON we cannot understand."""

    code = "ND-OUTPUT"


def _get(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise OutputFormatError(f"missing field {key!r}", where=where)
    value = obj[key]
    if isinstance(value, bool) and typ is int:
        raise OutputFormatError(f"field {key!r} should be {typ.__name__}, got bool", where=where)
    if not isinstance(value, typ):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise OutputFormatError(f"field {key!r} should be {name}, got {type(value).__name__}", where=where)
    return value


#: the kernel's CPU numbers fit comfortably below this (nr_cpu_ids is at most 8192 today)
MAX_CPU_ID = 65535


def _cpu_ids(obj: dict[str, Any], where: str) -> list[int]:
    values = _get(obj, "CPUIDs", list, where)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_CPU_ID:
            raise OutputFormatError(f"field 'CPUIDs' should hold CPU numbers, got {str(v)[:40]!r}", where=where)
    return list(values)


def _obj(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise OutputFormatError(f"expected a JSON object, got {type(data).__name__}", where=where)
    return data


@dataclass(frozen=True)
class Measurements:
    pcr0: str
    pcr1: str
    pcr2: str
    pcr8: str | None = None
    hash_algorithm: str = HASH_ALGORITHM

    def as_dict(self) -> dict[str, str]:
        """nitro-cli's shape: a BTreeMap, so keys sorted."""
        out = {"HashAlgorithm": self.hash_algorithm, "PCR0": self.pcr0, "PCR1": self.pcr1, "PCR2": self.pcr2}
        if self.pcr8 is not None:
            out["PCR8"] = self.pcr8
        return out

    def pcrs(self) -> dict[int, str]:
        out = {0: self.pcr0, 1: self.pcr1, 2: self.pcr2}
        if self.pcr8 is not None:
            out[8] = self.pcr8
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "Measurements") -> Measurements:
        obj = _obj(data, where)
        return cls(
            pcr0=_get(obj, "PCR0", str, where).lower(),
            pcr1=_get(obj, "PCR1", str, where).lower(),
            pcr2=_get(obj, "PCR2", str, where).lower(),
            pcr8=(_get(obj, "PCR8", str, where, optional=True) or None),
            hash_algorithm=_get(obj, "HashAlgorithm", str, where, optional=True) or HASH_ALGORITHM,
        )


@dataclass
class RunInfo:
    """run-enclave's stdout."""

    enclave_id: str
    process_id: int
    cid: int
    cpu_count: int
    cpu_ids: list[int]
    memory_mib: int
    name: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "run-enclave") -> RunInfo:
        obj = _obj(data, where)
        return cls(
            name=_get(obj, "EnclaveName", str, where, optional=True),
            enclave_id=_get(obj, "EnclaveID", str, where),
            process_id=_get(obj, "ProcessID", int, where),
            cid=_get(obj, "EnclaveCID", int, where),
            cpu_count=_get(obj, "NumberOfCPUs", int, where),
            cpu_ids=_cpu_ids(obj, where),
            memory_mib=_get(obj, "MemoryMiB", int, where),
        )


@dataclass
class EnclaveInfo:
    """One element of describe-enclaves."""

    enclave_id: str
    process_id: int
    cid: int
    cpu_count: int
    cpu_ids: list[int]
    memory_mib: int
    state: str
    flags: str
    name: str | None = None
    measurements: Measurements | None = None
    image_name: str | None = None
    image_version: str | None = None
    metadata: dict[str, Any] | None = None
    #: emulator-only (``nitro-emu emulator-describe``): how the enclave process is isolated
    isolation: dict[str, Any] | None = None
    #: emulator-only (``nitro-emu emulator-describe``): the EIF the enclave was launched from
    eif_path: str | None = None

    @property
    def debug_mode(self) -> bool:
        return self.flags == "DEBUG_MODE"

    @property
    def label(self) -> str:
        return self.name or self.enclave_id

    @classmethod
    def from_json(cls, data: Any, where: str = "describe-enclaves") -> EnclaveInfo:
        obj = _obj(data, where)
        meas = obj.get("Measurements")
        return cls(
            name=_get(obj, "EnclaveName", str, where, optional=True),
            enclave_id=_get(obj, "EnclaveID", str, where),
            process_id=_get(obj, "ProcessID", int, where),
            cid=_get(obj, "EnclaveCID", int, where),
            cpu_count=_get(obj, "NumberOfCPUs", int, where),
            cpu_ids=_cpu_ids(obj, where),
            memory_mib=_get(obj, "MemoryMiB", int, where),
            state=_get(obj, "State", str, where),
            flags=_get(obj, "Flags", str, where),
            measurements=Measurements.from_json(meas, f"{where}.Measurements") if meas else None,
            image_name=_get(obj, "ImageName", str, where, optional=True),
            image_version=_get(obj, "ImageVersion", str, where, optional=True),
            metadata=_get(obj, "Metadata", dict, where, optional=True),
        )


@dataclass(frozen=True)
class EmulatorDetail:
    """One element of ``nitro-emu emulator-describe``: what only the emulator knows about an enclave.

    nitro-cli's describe-enclaves has no such keys, so the emulator reports them on its own command
    and keeps describe-enclaves' JSON exactly nitro-cli's."""

    enclave_id: str
    eif_path: str | None = None
    isolation: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "emulator-describe") -> EmulatorDetail:
        obj = _obj(data, where)
        return cls(
            enclave_id=_get(obj, "EnclaveID", str, where),
            eif_path=_get(obj, "EifPath", str, where, optional=True),
            isolation=_get(obj, "Isolation", dict, where, optional=True),
        )


@dataclass
class TerminateInfo:
    enclave_id: str
    terminated: bool
    name: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "terminate-enclave") -> TerminateInfo:
        obj = _obj(data, where)
        return cls(
            name=_get(obj, "EnclaveName", str, where, optional=True),
            enclave_id=_get(obj, "EnclaveID", str, where),
            terminated=_get(obj, "Terminated", bool, where),
        )


@dataclass
class EifInfo:
    """describe-eif's stdout."""

    version: int
    measurements: Measurements
    is_signed: bool
    check_crc: bool
    signing_certificate: dict[str, Any] | None = None
    signature_check: bool | None = None
    image_name: str | None = None
    image_version: str | None = None
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "describe-eif") -> EifInfo:
        obj = _obj(data, where)
        return cls(
            version=_get(obj, "EifVersion", int, where),
            measurements=Measurements.from_json(_get(obj, "Measurements", dict, where), f"{where}.Measurements"),
            is_signed=_get(obj, "IsSigned", bool, where),
            signing_certificate=_get(obj, "SigningCertificate", dict, where, optional=True),
            check_crc=_get(obj, "CheckCRC", bool, where),
            signature_check=_get(obj, "SignatureCheck", bool, where, optional=True),
            image_name=_get(obj, "ImageName", str, where, optional=True),
            image_version=_get(obj, "ImageVersion", str, where, optional=True),
            metadata=_get(obj, "Metadata", dict, where, optional=True),
        )


@dataclass
class BuildResult:
    measurements: Measurements
    output_file: str


@dataclass
class BuildRequest:
    """Inputs of build-enclave. Exactly one image source: docker_uri (+docker_dir), rootfs (+cmd), image_tar."""

    output_file: str
    docker_uri: str | None = None
    docker_dir: str | None = None
    rootfs: str | None = None
    cmd: str | None = None
    env: list[str] = field(default_factory=list)
    image_tar: str | None = None
    signing_certificate: str | None = None
    private_key: str | None = None
    name: str | None = None
    version: str | None = None
    metadata: str | None = None
    #: build the nitrodeck enclave payload image (see enclave_app); emulator + nitrodeck only
    payload: bool = False
    #: fixed BuildTime (RFC 3339) so the same inputs give a bit-identical EIF; emulator only
    build_time: str | None = None


@dataclass
class LaunchRequest:
    eif_path: str
    memory_mib: int
    cpu_count: int | None = None
    cpu_ids: list[int] | None = None
    cid: int | None = None
    debug_mode: bool = False
    name: str | None = None
