"""Write a byte stream into a file once, digesting it on the way in worker threads.

The EIF builder streams the customer ramdisk (the flattened image: nearly all of an EIF) through
:class:`DigestingWriter`: every byte is read from the image's files once, into one of a few large
buffers, written to the EIF with ``pwrite``, and fed to each digest that needs it (PCR0, PCR2, the EIF's
CRC, the ramdisk's SHA-256), each digest in its own thread. hashlib and zlib release the GIL for large
buffers, so on two cores the digests run beside each other and beside the reads and writes. Small
files and cpio headers are packed into the same buffers: the digests and the file system see large
pieces whatever the tree looks like, and a file costs one open, one read per buffer it spans, one close.

:func:`crc32_combine` joins CRCs of consecutive pieces (zlib's, which Python does not expose), so the
EIF's CRC can be finished once the metadata before the ramdisk is known.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

BUFFER_SIZE = 4 * 1024 * 1024
BUFFERS = 4
#: how much written data is handed to the disk at a time (sync_file_range), so that the fsync of the
#: finished file finds little left to write
WRITEBACK_EVERY = 32 * 1024 * 1024

Update = Callable[[memoryview], object]


class OutputFailed(Exception):  # noqa: N818 - wraps the OSError of a write, as opposed to a read
    """Writing the output failed (a full disk...); ``error`` is the OSError. Reads from ``copy_from``'s
    descriptors raise their OSError as it is, so callers can tell a bad input from a bad output."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE): start writing a range to disk, without waiting
    and without dropping it from the page cache (os has no binding). None elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, size: int) -> None:
        call(fd, offset, size, 2)  # SYNC_FILE_RANGE_WRITE; a failure only means fsync does it all later

    return start_writeback


class _Digest(threading.Thread):
    """Feeds the writer's full buffers, in order, to one digest's update."""

    def __init__(self, update: Update, owner: DigestingWriter) -> None:
        super().__init__(daemon=True, name="eif-digest")
        self.update = update
        self.owner = owner
        self.jobs: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            idx, n = job
            try:
                if self.error is None:
                    self.update(self.owner.views[idx][:n])
            except BaseException as exc:  # noqa: BLE001 - raised by the writer's close, in its thread
                self.error = exc
            finally:
                self.owner.release(idx)


class DigestingWriter:
    """Bytes written here land in ``fd`` from ``offset`` on (``pwrite``: the descriptor's position is
    not used) and reach every digest in ``updates`` in the same order. Use as a context manager, or
    call :meth:`close` (flushes, stops the threads, raises a digest's error) or :meth:`abort`."""

    def __init__(
        self,
        fd: int,
        offset: int,
        updates: Sequence[Update],
        *,
        buffer_size: int = BUFFER_SIZE,
        buffers: int = BUFFERS,
        writeback: bool = False,
    ) -> None:
        """``writeback``: start writing the data to disk as it goes (the caller will fsync the file, and
        the disk then works beside the digests instead of after them)."""
        self.fd = fd
        self.offset = offset
        #: bytes handed to the file so far (those still in the current buffer not included)
        self.written = 0
        self.views = [memoryview(bytearray(buffer_size)) for _ in range(buffers)]
        self._size = buffer_size
        self._cur = 0
        self._fill = 0
        self._lock = threading.Lock()
        self._pending = [0] * buffers
        self._free = [threading.Event() for _ in range(buffers)]
        for event in self._free:
            event.set()
        self._digests = [_Digest(update, self) for update in updates]
        for digest in self._digests:
            digest.start()
        self._open = True
        self._writeback = _load_sync_file_range() if writeback else None
        self._synced = 0  # bytes (from offset) whose writeback has been started

    def release(self, idx: int) -> None:
        with self._lock:
            self._pending[idx] -= 1
            if self._pending[idx] == 0:
                self._free[idx].set()

    @property
    def position(self) -> int:
        """Bytes accepted so far, buffered ones included."""
        return self.written + self._fill

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            take = min(self._size - self._fill, len(view))
            self.views[self._cur][self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == self._size:
                self._flush()

    def copy_from(self, fd: int, size: int) -> int:
        """Read up to ``size`` bytes from ``fd`` (at its position) straight into the buffers; returns how
        many there were (fewer at end of file)."""
        left = size
        while left:
            if self._fill == self._size:
                self._flush()
            take = min(self._size - self._fill, left)
            n = os.readv(fd, [self.views[self._cur][self._fill : self._fill + take]])
            if n == 0:
                break
            self._fill += n
            left -= n
        if self._fill == self._size:
            self._flush()
        return size - left

    def _flush(self) -> None:
        n, idx = self._fill, self._cur
        if n == 0:
            return
        with self._lock:
            self._pending[idx] = len(self._digests)
            if self._digests:
                self._free[idx].clear()
        for digest in self._digests:
            digest.jobs.put((idx, n))
        view = self.views[idx][:n]
        done = 0
        try:
            while done < n:  # the digests read the same buffer meanwhile; nobody writes it until they are done
                done += os.pwrite(self.fd, view[done:], self.offset + self.written + done)
        except OSError as exc:
            raise OutputFailed(exc) from exc
        self.written += n
        if self._writeback is not None and self.written - self._synced >= WRITEBACK_EVERY:
            self._writeback(self.fd, self.offset + self._synced, self.written - self._synced)
            self._synced = self.written
        self._cur = (idx + 1) % len(self.views)
        self._fill = 0
        self._free[self._cur].wait()

    def _stop(self) -> None:
        if not self._open:
            return
        self._open = False
        for digest in self._digests:
            digest.jobs.put(None)
        for digest in self._digests:
            digest.join()

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._stop()
        for digest in self._digests:
            if digest.error is not None:
                raise digest.error

    def abort(self) -> None:
        self._stop()

    def __enter__(self) -> DigestingWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class Crc32:
    """zlib's CRC-32 as an object with ``update`` (a digest for :class:`DigestingWriter`)."""

    def __init__(self, start: int = 0) -> None:
        import zlib

        self._crc32 = zlib.crc32
        self.value = start

    def update(self, data: memoryview) -> None:
        self.value = self._crc32(data, self.value)


# --- CRC-32 of a concatenation ------------------------------------------------------------------------
# zlib's crc32_combine (crc32.c, the x^(2^n) table method): the CRC of A || B from crc(A), crc(B), len(B).

_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo p(x), in zlib's reflected bit order."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return p


def _x2n_table() -> list[int]:
    table = [0] * 32
    p = 1 << 30  # x^1
    table[0] = p
    for n in range(1, 32):
        p = _multmodp(p, p)
        table[n] = p
    return table


_X2N = _x2n_table()


def _x2nmodp(n: int, k: int) -> int:
    """x^(n * 2^k) modulo p(x)."""
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A || B, given crc32(A), crc32(B) and len(B)."""
    return _multmodp(_x2nmodp(len2, 3), crc1) ^ (crc2 & 0xFFFFFFFF)
