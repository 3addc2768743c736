"""The composition root: what core is given by the program that uses it.

core knows no emulator and no payload. Importing this module registers the emulator backend (and
its stand-in kernel blobs) with core's registry; :data:`payload_factory` is the enclave payload's
build request, handed to every Lifecycle the console makes so that `build --payload` works.
"""

from __future__ import annotations

import emulator.backend  # noqa: F401 - registers the "emulator" backend
from enclave_app.packaging import payload_request as payload_factory

__all__ = ["payload_factory"]
