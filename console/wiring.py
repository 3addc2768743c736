"""The composition root: what core is given by the program that uses it.

core knows no emulator and no payload. Importing this module registers the emulator backend with
core's registry (its module, and with it the stand-in kernel blobs, loads only when the emulator is
chosen); :func:`payload_factory` is the enclave payload's build request, handed to every Lifecycle the
console makes so that `build --payload` works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.backends import registry

if TYPE_CHECKING:
    from core.backends.base import Backend
    from core.models import BuildRequest


def _emulator(chosen_by: str) -> Backend:
    from emulator.backend import emulator_backend

    return emulator_backend(chosen_by)


def payload_factory(output_file: str, build_time: str | None = None, docker_uri: str | None = None) -> BuildRequest:
    from enclave_app.packaging import payload_request

    return payload_request(output_file, build_time, docker_uri)


registry.register("emulator", _emulator)

__all__ = ["payload_factory"]
