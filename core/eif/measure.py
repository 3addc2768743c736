"""PCR measurements of an EIF, computed the way nitro-cli and the Nitro hypervisor do.

PCRx = SHA384(48 zero bytes || SHA384(content_x)), where
  PCR0 = kernel || cmdline || every ramdisk,  PCR1 = kernel || cmdline || ramdisk0,
  PCR2 = ramdisks after the first,            PCR8 = DER of the signing certificate.

The big part is the customer ramdisk, which feeds both PCR0 and PCR2. Each chunk is read once into
a fixed buffer and hashed by two threads at once (hashlib releases the GIL on large updates), so on
two cores measuring costs about one SHA-384 pass, not two.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.eif.format import EifError, EifFile, EifSection, SectionType, read_eif
from core.eif.signature import signing_certificate_der
from core.models import Measurements

if TYPE_CHECKING:
    from hashlib import _Hash

PCR_SIZE = 48
CHUNK = 4 * 1024 * 1024
BUFFERS = 3


def extend(old: bytes, data: bytes) -> bytes:
    """The NSM/TPM extend primitive: SHA384(old || data)."""
    if len(old) != PCR_SIZE:
        raise ValueError(f"a PCR is {PCR_SIZE} bytes, got {len(old)}")
    return hashlib.sha384(old + data).digest()


def finalize(content_hasher: _Hash) -> str:
    """One extend of a zero PCR with the content digest, as hex."""
    return extend(b"\0" * PCR_SIZE, content_hasher.digest()).hex()


def pcr_of_bytes(data: bytes) -> str:
    """``nitro-cli pcr --input``: PCR of a blob."""
    return finalize(hashlib.sha384(data))


def pcr_of_file(path: str | os.PathLike[str], chunk: int = 1024 * 1024) -> str:
    hasher = hashlib.sha384()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            hasher.update(block)
    return finalize(hasher)


class _Worker(threading.Thread):
    """Hashes buffers handed over by the reader; signals each buffer free when done with it."""

    def __init__(self, hasher: _Hash, buffers: list[bytearray], free: list[threading.Event]) -> None:
        super().__init__(daemon=True, name="pcr2-hasher")
        self.hasher = hasher
        self.buffers = buffers
        self.free = free
        self.jobs: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            idx, n = job
            try:
                if self.error is None:
                    self.hasher.update(memoryview(self.buffers[idx])[:n])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reader thread
                self.error = exc
            finally:
                self.free[idx].set()


def _hash_sections(
    eif: EifFile, sections: list[EifSection], ramdisk0: EifSection | None
) -> tuple[str, str, str]:
    pcr0 = hashlib.sha384()
    pcr1: _Hash | None = None
    pcr2 = hashlib.sha384()
    buffers = [bytearray(CHUNK) for _ in range(BUFFERS)]
    free = [threading.Event() for _ in range(BUFFERS)]
    for ev in free:
        ev.set()
    worker = _Worker(pcr2, buffers, free)
    worker.start()
    turn = 0
    try:
        with open(eif.path, "rb", buffering=0) as fh:
            for sec in sections:
                to_pcr2 = sec.type == SectionType.RAMDISK and ramdisk0 is not None and sec is not ramdisk0
                fh.seek(sec.data_offset)
                left = sec.size
                while left > 0:
                    idx = turn % BUFFERS
                    turn += 1
                    free[idx].wait()
                    view = memoryview(buffers[idx])[: min(CHUNK, left)]
                    n = fh.readinto(view)
                    if not n:
                        raise EifError("file ends inside a section", offset=fh.tell(), problem="truncated")
                    left -= n
                    if to_pcr2:
                        free[idx].clear()
                        worker.jobs.put((idx, n))
                    pcr0.update(view[:n])
                if sec is ramdisk0:
                    pcr1 = pcr0.copy()
    finally:
        worker.jobs.put(None)
        worker.join()
    if worker.error is not None:
        raise worker.error
    if pcr1 is None:  # read_eif guarantees a ramdisk; keep the type checker and odd inputs honest
        pcr1 = pcr0.copy()
    return finalize(pcr0), finalize(pcr1), finalize(pcr2)


def measure(eif: EifFile) -> Measurements:
    measured = [
        s for s in eif.sections if s.type in (SectionType.KERNEL, SectionType.CMDLINE, SectionType.RAMDISK)
    ]
    ramdisks = eif.ramdisks
    pcr0, pcr1, pcr2 = _hash_sections(eif, measured, ramdisks[0] if ramdisks else None)
    pcr8 = None
    if eif.signature is not None:
        pcr8 = pcr_of_bytes(signing_certificate_der(eif))
    return Measurements(pcr0=pcr0, pcr1=pcr1, pcr2=pcr2, pcr8=pcr8)


def measure_eif(path: str | os.PathLike[str]) -> Measurements:
    """Validate and measure an EIF file (PCR8 only when it carries a signature)."""
    return measure(read_eif(Path(path)))
