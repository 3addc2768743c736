"""PCR measurements of an EIF, computed the way nitro-cli and the Nitro hypervisor do.

PCRx = SHA384(48 zero bytes || SHA384(content_x)), where
  PCR0 = kernel || cmdline || every ramdisk,  PCR1 = kernel || cmdline || ramdisk0,
  PCR2 = ramdisks after the first,            PCR8 = DER of the signing certificate.

The big part is the customer ramdisk, which feeds both PCR0 and PCR2 (and, for describe-eif, the
EIF's CRC). Each chunk is read once into a fixed buffer and digested by up to three threads at once
(hashlib and zlib release the GIL on large buffers), so on two cores measuring costs about one
SHA-384 pass, not two or three.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.eif.format import CRC_COVERED, SECTION_HEADER_SIZE, EifError, EifFile, SectionType, read_eif
from core.eif.signature import signing_certificate_der
from core.files import open_regular
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
    """PCR of a file's bytes; a FIFO or device is refused (typed), never read until it ends."""
    hasher = hashlib.sha384()
    with os.fdopen(open_regular(Path(path)), "rb") as fh:
        while block := fh.read(chunk):
            hasher.update(block)
    return finalize(hasher)


class _Worker(threading.Thread):
    """Feeds buffers handed over by the reader to one digest (SHA-384 for PCR2, or the EIF's CRC),
    in order; signals each buffer free for this worker when done with it."""

    def __init__(self, name: str, update: Callable[[memoryview | bytes], None], buffers: list[bytearray]) -> None:
        super().__init__(daemon=True, name=name)
        self.update = update
        self.buffers = buffers
        self.free = [threading.Event() for _ in buffers]
        for ev in self.free:
            ev.set()
        self.jobs: queue.Queue[tuple[int, int] | bytes | None] = queue.Queue()
        self.error: BaseException | None = None

    def give(self, idx: int, n: int) -> None:
        self.free[idx].clear()
        self.jobs.put((idx, n))

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if isinstance(job, bytes):  # a small piece (a section header), copied
                if self.error is None:
                    self._feed(job)
                continue
            idx, n = job
            try:
                if self.error is None:
                    self._feed(memoryview(self.buffers[idx])[:n])
            finally:
                self.free[idx].set()

    def _feed(self, data: memoryview | bytes) -> None:
        try:
            self.update(data)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reader thread
            self.error = exc


class _Crc:
    def __init__(self, start: bytes) -> None:
        self.value = zlib.crc32(start)

    def update(self, data: memoryview | bytes) -> None:
        self.value = zlib.crc32(data, self.value)


MEASURED = (SectionType.KERNEL, SectionType.CMDLINE, SectionType.RAMDISK)


def _hash_sections(eif: EifFile, with_crc: bool) -> tuple[str, str, str, int | None]:
    """One read of the file: PCR0 in this thread, PCR2 and (optionally) the CRC in one thread each.

    hashlib and zlib release the GIL on large buffers, so on two cores the three digests run side by
    side and the pass costs about one SHA-384 over the file. Without the CRC only the measured
    sections are read."""
    pcr0 = hashlib.sha384()
    pcr1: _Hash | None = None
    pcr2 = hashlib.sha384()
    ramdisks = eif.ramdisks
    ramdisk0 = ramdisks[0] if ramdisks else None
    buffers = [bytearray(CHUNK) for _ in range(BUFFERS)]
    workers = [_Worker("pcr2-hasher", pcr2.update, buffers)]
    crc = _Crc(eif.header.pack()[:CRC_COVERED]) if with_crc else None
    if crc is not None:
        workers.append(_Worker("eif-crc", crc.update, buffers))
    pcr2_worker = workers[0]
    for w in workers:
        w.start()
    turn = 0
    try:
        # every byte comes from the EIF's one open descriptor (never re-opened by path)
        source = eif.source
        for sec in eif.sections:
            measured = sec.type in MEASURED
            if not measured and crc is None:
                continue
            to_pcr2 = sec.type == SectionType.RAMDISK and ramdisk0 is not None and sec is not ramdisk0
            if crc is not None:
                head = source.pread(SECTION_HEADER_SIZE, sec.offset)
                if len(head) != SECTION_HEADER_SIZE:
                    raise EifError("file ends inside a section header", offset=sec.offset, problem="truncated")
                workers[1].jobs.put(head)
            pos = sec.data_offset
            left = sec.size
            while left > 0:
                idx = turn % BUFFERS
                turn += 1
                for w in workers:
                    w.free[idx].wait()
                view = memoryview(buffers[idx])[: min(CHUNK, left)]
                n = source.pread_into(view, pos)
                if not n:
                    raise EifError("file ends inside a section", offset=pos, problem="truncated")
                pos += n
                left -= n
                if to_pcr2:
                    pcr2_worker.give(idx, n)
                if crc is not None:
                    workers[1].give(idx, n)
                if measured:
                    pcr0.update(view[:n])
            if sec is ramdisk0:
                pcr1 = pcr0.copy()
    finally:
        for w in workers:
            w.jobs.put(None)
        for w in workers:
            w.join()
    for w in workers:
        if w.error is not None:
            raise w.error
    if pcr1 is None:  # read_eif guarantees a ramdisk; keep the type checker and odd inputs honest
        pcr1 = pcr0.copy()
    return finalize(pcr0), finalize(pcr1), finalize(pcr2), (crc.value if crc is not None else None)


def measure(eif: EifFile, *, with_crc: bool = False) -> Measurements:
    """PCR0/1/2 (and PCR8 when signed). ``with_crc`` also computes the EIF's CRC in the same read and
    keeps it on ``eif`` (describe-eif reports CheckCRC), instead of a second pass over the file."""
    pcr0, pcr1, pcr2, crc = _hash_sections(eif, with_crc)
    if crc is not None:
        eif.set_computed_crc(crc)
    pcr8 = None
    if eif.signature is not None:
        pcr8 = pcr_of_bytes(signing_certificate_der(eif))
    # a file written in place while we read it gives PCRs of neither image: refuse them
    eif.check_unchanged()
    return Measurements(pcr0=pcr0, pcr1=pcr1, pcr2=pcr2, pcr8=pcr8)


def measure_eif(path: str | os.PathLike[str]) -> Measurements:
    """Validate and measure an EIF file (PCR8 only when it carries a signature); one open file."""
    with read_eif(Path(path)) as eif:
        return measure(eif)
