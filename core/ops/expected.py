"""Pinned expected PCRs: "the EIF known as KEY should measure exactly so".

One JSON file per key under ``core.home.expected_pcrs_dir()``: ``{"format": 2, "key": KEY, "pcrs":
{"0": hex, ...}, "pinned_at": rfc3339, "eif_path": path or null}``. The key is the EIF's image name
(describe-eif ``ImageName``) unless the operator names it (``nitrodeck pin EIF --as KEY``).

Which pin judges an enclave (:meth:`ExpectedPcrs.judge`), most specific first:
1. a pin made from the very EIF file the enclave was launched from (its path; newest pin wins);
2. the pin keyed by the image name of its EIF (describe-enclaves --metadata, or what nitrodeck
   recorded at launch), so the same EIF launched under another name is judged the same;
3. only when no image name is known at all: a pin keyed by the enclave's name (how pins were keyed
   before format 2; kept so existing pins keep working).
The verdict says which pin it used and how it was found, so the UI can show it.
Files of format 1 (``{"image": ...}``) are rewritten as format 2 the first time they are read.
Debug-mode enclaves attest all-zero PCRs, so they are reported as "debug", never as a match.
"""

from __future__ import annotations

import contextlib
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
#: a pin key: an image name as nitro-cli makes it (the Docker URI before its first ':', so a registry path
#: like ``123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app``) or a name the operator gives
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,199}$")
KEY_RULE = "letters, digits and . _ : @ + - /, starting with a letter or digit, at most 200 characters"
_MAX_FILE_NAME = 250
_HEX = re.compile(r"^[0-9a-f]{96}$")
PCR_INDEXES = frozenset({0, 1, 2, 3, 4, 8})
FORMAT = 2
MAX_PINS = 4096

Verdict = Literal["match", "mismatch", "unpinned", "debug"]


class ExpectedPcrError(NitrodeckError):
    code = "ND-EXPECTED"


@dataclass(frozen=True)
class Pin:
    key: str
    pcrs: dict[int, str]
    pinned_at: str
    #: the EIF file the measurements came from, when pinned from a file
    eif_path: str | None = None
    #: the file was written before pins had explicit keys (format 1) and was migrated
    migrated: bool = False

    @property
    def image(self) -> str:  # the name format 1 used for the key
        return self.key

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "key": self.key,
            "pcrs": {str(k): v for k, v in sorted(self.pcrs.items())},
            "pinned_at": self.pinned_at,
            "eif_path": self.eif_path,
        }
        if self.migrated:
            out["migrated_from"] = 1
        return out


@dataclass(frozen=True)
class Judgement:
    """An enclave's PCR verdict and the pin it was compared with (``by``: eif, image or name)."""

    verdict: Verdict
    pin: Pin | None = None
    by: str | None = None

    @property
    def key(self) -> str | None:
        return self.pin.key if self.pin else None

    @property
    def expected(self) -> dict[int, str] | None:
        return dict(self.pin.pcrs) if self.pin else None


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a pin, or None."""
    if not _NAME.match(key):
        return f"{key[:80]!r} cannot name a pin"
    if len(_encode(key)) > _MAX_FILE_NAME:
        return f"{key[:80]!r}… is too long to name a pin"
    return None


def _encode(key: str) -> str:
    # ':' and '@' are fine in names but awkward in file names, '/' cannot be in one; '%' is never in a key,
    # so the encoding is unambiguous (and "a/../b" is one plain file name, "a%2F..%2Fb.json")
    return key.replace(":", "%3A").replace("@", "%40").replace("/", "%2F") + ".json"


def _file_name(key: str) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise ExpectedPcrError(problem, where="expected PCRs", hint=f"use {KEY_RULE}")
    return _encode(key)


def parse_pin(data: bytes, where: str) -> Pin:
    if len(data) > MAX_FILE:
        raise InputTooLarge(f"{len(data)} bytes exceeds {MAX_FILE}", where=where)
    try:
        obj: Any = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ExpectedPcrError("not valid JSON", where=where) from None
    if not isinstance(obj, dict):
        raise ExpectedPcrError("expected {\"key\": str, \"pcrs\": {index: hex}}", where=where)
    pin_key = obj.get("key") if obj.get("format") == FORMAT else obj.get("image")
    if not isinstance(pin_key, str) or not _NAME.match(pin_key) or not isinstance(obj.get("pcrs"), dict):
        raise ExpectedPcrError("expected {\"key\": str, \"pcrs\": {index: hex}}", where=where)
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
    eif_path = obj.get("eif_path")
    migrated = obj.get("format") != FORMAT or obj.get("migrated_from") == 1
    return Pin(
        pin_key,
        pcrs,
        pinned_at if isinstance(pinned_at, str) else "",
        eif_path if isinstance(eif_path, str) and len(eif_path) <= 4096 else None,
        migrated,
    )


class ExpectedPcrs:
    def __init__(self, directory: Path | None = None, *, read_only: bool = False) -> None:
        self.directory = directory or home.expected_pcrs_dir()
        #: read-only: an old-format pin is read as it is, not written back in the new format
        self.read_only = read_only
        #: pin files that could not be read lately (path -> why): they judge nothing, and front ends say so
        self.problems: dict[str, str] = {}

    def path_for(self, key: str) -> Path:
        return self.directory / _file_name(key)

    def _write(self, pin: Pin) -> None:
        path = self.path_for(pin.key)
        home.ensure(self.directory)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(pin.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def pin(self, key: str, measurements: Measurements, eif_path: str | None = None) -> Pin:
        pcrs = {i: v.lower() for i, v in measurements.pcrs().items()}
        _file_name(key)  # refuse a bad key before anything is written
        pin = Pin(key, pcrs, datetime.now(UTC).isoformat(timespec="seconds"), eif_path)
        self._write(pin)
        return pin

    def _read(self, path: Path) -> Pin | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExpectedPcrError(f"cannot read: {exc.strerror}", where=str(path)) from None
        pin = parse_pin(data, str(path))
        if b'"format"' not in data and not self.read_only:
            # format 1: same key, same PCRs; written back once so every reader sees format 2
            with contextlib.suppress(OSError, ExpectedPcrError):
                self._write(pin)
        return pin

    def get(self, key: str) -> Pin | None:
        return self._read(self.path_for(key))

    def _usable(self, key: str) -> Pin | None:
        """The pin under ``key``; a file that cannot be read judges nothing and is kept in ``problems``
        (one broken pin file must not take status or the dashboard down)."""
        path = str(self.path_for(key))
        try:
            pin = self.get(key)
        except NitrodeckError as exc:
            self.problems[path] = exc.message
            return None
        self.problems.pop(path, None)
        return pin

    def problem_lines(self) -> list[str]:
        return [f"pin file {path} is unreadable ({why}): it judges nothing; re-pin with `nitrodeck pin`"
                for path, why in sorted(self.problems.items())]

    def all(self) -> list[Pin]:
        """Every readable pin, by key; unreadable files are skipped and kept in ``problems``."""
        try:
            paths = sorted(self.directory.glob("*.json"))[:MAX_PINS]
        except OSError:
            return []
        out = []
        for path in paths:
            try:
                pin = self._read(path)
            except NitrodeckError as exc:
                self.problems[str(path)] = exc.message
                continue
            self.problems.pop(str(path), None)
            if pin is not None:
                out.append(pin)
        return sorted(out, key=lambda p: p.key)

    def unpin(self, key: str) -> bool:
        try:
            self.path_for(key).unlink()
            return True
        except FileNotFoundError:
            return False

    @staticmethod
    def image_of(enclave: EnclaveInfo) -> str | None:
        return enclave.image_name or enclave.name

    def pin_for(
        self, enclave: EnclaveInfo, eif_path: str | None = None, image_name: str | None = None
    ) -> tuple[Pin | None, str | None]:
        """The pin that judges ``enclave`` and how it was found (see the module docstring)."""
        path = eif_path or enclave.eif_path
        if path:
            by_file = [p for p in self.all() if p.eif_path and p.eif_path == path]
            if by_file:
                return max(by_file, key=lambda p: p.pinned_at), "eif"
        image = image_name or enclave.image_name
        if image:
            return (self._usable(image), "image") if key_problem(image) is None else (None, None)
        if enclave.name and key_problem(enclave.name) is None:
            pin = self._usable(enclave.name)
            if pin is not None:
                return pin, "name"
        return None, None

    def judge(self, enclave: EnclaveInfo, eif_path: str | None = None, image_name: str | None = None) -> Judgement:
        pin, by = self.pin_for(enclave, eif_path, image_name)
        if enclave.debug_mode:
            return Judgement("debug", pin, by)
        if pin is None:
            return Judgement("unpinned")
        if enclave.measurements is None:
            return Judgement("mismatch", pin, by)
        actual = {i: v.lower() for i, v in enclave.measurements.pcrs().items()}
        ok = all(actual.get(i) == v for i, v in pin.pcrs.items() if i in (0, 1, 2, 8))
        return Judgement("match" if ok else "mismatch", pin, by)

    def expected_for(self, enclave: EnclaveInfo) -> dict[int, str] | None:
        pin, _ = self.pin_for(enclave)
        return dict(pin.pcrs) if pin else None

    def match(self, enclave: EnclaveInfo) -> Verdict:
        return self.judge(enclave).verdict
