"""describe-eif's JSON and the ImageName/ImageVersion/Metadata trio (also shown by describe-enclaves --metadata)."""

from __future__ import annotations

from typing import Any

from core.eif.format import EifFile

_BUILD_KEYS = ("BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion")


def identity(eif: EifFile) -> dict[str, Any]:
    """{"ImageName", "ImageVersion", "Metadata"} in nitro-cli's shape; {} for EIFs without metadata."""
    meta = eif.metadata()
    if meta is None:
        return {}
    raw_build = meta.get("BuildMetadata")
    build: dict[str, Any] = raw_build if isinstance(raw_build, dict) else {}
    out_meta: dict[str, Any] = {key: build.get(key) for key in _BUILD_KEYS}
    out_meta["DockerInfo"] = meta.get("DockerInfo")
    custom = meta.get("CustomMetadata")
    if isinstance(custom, dict):
        out_meta.update(custom)  # flattened, as MetadataDescribeInfo does
    return {"ImageName": meta.get("ImageName"), "ImageVersion": meta.get("ImageVersion"), "Metadata": out_meta}


def describe_eif(eif: EifFile) -> dict[str, Any]:
    """describe-eif's object, keys in nitro-cli's order."""
    from core.eif.measure import measure

    out: dict[str, Any] = {"EifVersion": eif.version, "Measurements": measure(eif, with_crc=True).as_dict(), "IsSigned": eif.is_signed}
    check: bool | None = None
    if eif.is_signed:
        from core.eif import sign as eif_sign

        cert, check = _signature(eif, eif_sign)
        out["SigningCertificate"] = cert
    out["CheckCRC"] = eif.crc_ok
    if eif.is_signed:
        out["SignatureCheck"] = check
    out.update(identity(eif))
    return out


def _signature(eif: EifFile, eif_sign: Any) -> tuple[dict[str, Any], bool]:
    """SigningCertificate summary and the SignatureCheck verdict (core.eif.sign.check_signature)."""
    info = eif_sign.check_signature(eif)
    return dict(info.certificate_info), bool(info.ok)
