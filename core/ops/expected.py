"""Pinned expected PCRs per image: "this image name should measure exactly so".

One JSON file per image name under ``core.home.expected_pcrs_dir()``: ``{"image": name, "pcrs":
{"0": hex, ...}, "pinned_at": rfc3339}``. A running enclave is compared against the pin for its
image name (describe-enclaves --metadata gives ImageName; without it the enclave name is used).
Debug-mode enclaves attest all-zero PCRs, so they are reported as "debug", never as a match.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core import home
from core.errors import InputTooLarge, NitrodeckError
from core.models import EnclaveInfo, Measurements

MAX_FILE = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{96}$")
PCR_INDEXES = frozenset({0, 1, 2, 3, 4, 8})

Verdict = Literal["match", "mismatch", "unpinned", "debug"]


class ExpectedPcrError(NitrodeckError):
    code = "ND-EXPECTED"


@dataclass(frozen=True)
class Pin:
    image: str
    pcrs: dict[int, str]
    pinned_at: str


def _file_name(image: str) -> str:
    if not _NAME.match(image):
        raise ExpectedPcrError(
            f"image name {image[:60]!r} cannot be pinned",
            where="expected PCRs",
            hint="use letters, digits and . _ : @ + - (at most 128 characters)",
        )
    # ':' and '@' are fine in names but awkward in file names; '/' never reaches here.
    return image.replace(":", "%3A").replace("@", "%40") + ".json"


def parse_pin(data: bytes, where: str) -> Pin:
    if len(data) > MAX_FILE:
        raise InputTooLarge(f"{len(data)} bytes exceeds {MAX_FILE}", where=where)
    try:
        obj: Any = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ExpectedPcrError("not valid JSON", where=where) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not isinstance(obj.get("pcrs"), dict):
        raise ExpectedPcrError("expected {\"image\": str, \"pcrs\": {index: hex}}", where=where)
    pcrs: dict[int, str] = {}
    for key, value in obj["pcrs"].items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) in PCR_INDEXES):
            raise ExpectedPcrError(f"PCR index {str(key)[:10]!r} is not one of {sorted(PCR_INDEXES)}", where=where)
        if not isinstance(value, str) or not _HEX.match(value.lower()):
            raise ExpectedPcrError(f"PCR{key} is not 96 hex characters", where=where)
        pcrs[int(key)] = value.lower()
    if not pcrs:
        raise ExpectedPcrError("no PCRs pinned", where=where)
    pinned_at = obj.get("pinned_at")
    return Pin(obj["image"], pcrs, pinned_at if isinstance(pinned_at, str) else "")


class ExpectedPcrs:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or home.expected_pcrs_dir()

    def path_for(self, image: str) -> Path:
        return self.directory / _file_name(image)

    def pin(self, image: str, measurements: Measurements) -> Pin:
        pcrs = {i: v.lower() for i, v in measurements.pcrs().items()}
        pin = Pin(image, pcrs, datetime.now(UTC).isoformat(timespec="seconds"))
        path = self.path_for(image)
        home.ensure(self.directory)
        body = {"image": image, "pcrs": {str(k): v for k, v in sorted(pin.pcrs.items())}, "pinned_at": pin.pinned_at}
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return pin

    def get(self, image: str) -> Pin | None:
        path = self.path_for(image)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExpectedPcrError(f"cannot read: {exc.strerror}", where=str(path)) from None
        return parse_pin(data, str(path))

    def unpin(self, image: str) -> bool:
        try:
            self.path_for(image).unlink()
            return True
        except FileNotFoundError:
            return False

    @staticmethod
    def image_of(enclave: EnclaveInfo) -> str | None:
        return enclave.image_name or enclave.name

    def expected_for(self, enclave: EnclaveInfo) -> dict[int, str] | None:
        image = self.image_of(enclave)
        if not image or not _NAME.match(image):
            return None
        pin = self.get(image)
        return dict(pin.pcrs) if pin else None

    def match(self, enclave: EnclaveInfo) -> Verdict:
        if enclave.debug_mode:
            return "debug"
        expected = self.expected_for(enclave)
        if expected is None:
            return "unpinned"
        if enclave.measurements is None:
            return "mismatch"
        actual = {i: v.lower() for i, v in enclave.measurements.pcrs().items()}
        ok = all(actual.get(i) == v for i, v in expected.items() if i in (0, 1, 2, 8))
        return "match" if ok else "mismatch"
