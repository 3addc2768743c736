"""Fault hooks for tests that need a moment inside another process (tests/test_harden_eif.py).

Put this folder on PYTHONPATH and set ND_TEST_HOOK; processes without it are untouched. The enclave's
own init runs with ``python -I`` and never loads this file.

- ``swap-after-measure:SRC:DST``: right after the first EIF measurement in this process, rename SRC
  over DST (the file being launched), as an attacker racing a launch would.
- ``kill-mid-write``: SIGKILL this process half-way through writing an EIF (EifWriter's sections, or
  the builder's streamed customer ramdisk after its first piece is written).
"""

from __future__ import annotations

import os

_HOOK = os.environ.get("ND_TEST_HOOK", "")

if _HOOK.startswith("swap-after-measure:"):
    import core.eif.measure as _measure

    _src, _dst = _HOOK.split(":", 2)[1:]
    _orig = _measure.measure

    def _swapping(eif):  # type: ignore[no-untyped-def]
        out = _orig(eif)
        if os.path.exists(_src):
            os.replace(_src, _dst)
        return out

    _measure.measure = _swapping  # type: ignore[assignment]

elif _HOOK == "kill-mid-write":
    import signal

    import core.eif.format as _format

    _orig_write_to = _format.EifWriter.write_to

    def _killing(self, fh):  # type: ignore[no-untyped-def]
        fh.write(b"\0" * (1024 * 1024))
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    _format.EifWriter.write_to = _killing  # type: ignore[method-assign]

    import core.eif.stream as _stream

    _orig_flush = _stream.DigestingWriter._flush

    def _killing_flush(self):  # type: ignore[no-untyped-def]
        _orig_flush(self)
        os.kill(os.getpid(), signal.SIGKILL)

    _stream.DigestingWriter._flush = _killing_flush  # type: ignore[method-assign]
