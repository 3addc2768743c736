"""The emulator as a nitrodeck backend: nitro-emu's argv, the emulated vsock folder, and what only
an emulated world has (the allocator model, the local KMS). Importing this module registers it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core import home
from core.backends import registry
from core.backends.base import Answer, AnswerAbandoned, Backend, ExitInfo, HugepageModel, LocalKms, PoolModel
from core.errors import NitrodeckError
from core.models import EnclaveInfo
from emulator import stand_ins
from emulator.stand_ins import STAND_IN_BLOBS

__all__ = ["STAND_IN_BLOBS", "EmulatorBackend", "emulator_backend"]


#: the process nitrodeck would start for a nitro-emu command: this interpreter running this package
OWN_ARGV = (sys.executable, "-m", "emulator")


class EmulatorBackend(Backend):
    def answer(
        self,
        args: Sequence[str],
        deadline: float,
        cancelled: Callable[[], bool] | None = None,
        *,
        read_only: bool = False,
    ) -> Answer | None:
        from emulator import cli, state

        # only when the process would run this very code (not a wrapper put in as argv)
        if self.argv != OWN_ARGV or not args or args[0] not in cli.IN_PROCESS_COMMANDS:
            return None
        try:
            code, out, err = cli.answer(args, deadline, cancelled, read_only=read_only)
        except state.LockWaitAbandoned as exc:
            raise AnswerAbandoned(exc.cancelled) from None
        return Answer(code, out, err)

    def pool_model(self, enclaves: list[EnclaveInfo], *, read_only: bool = False) -> PoolModel | None:
        from emulator import allocator

        try:
            snap = allocator.snapshot(read_only=read_only)
        except NitrodeckError as exc:  # instance.yaml or allocator.yaml unusable: say so, keep status up
            return PoolModel([], [], str(exc))
        if snap.error:
            return PoolModel([], [], str(snap.error))
        pages = [HugepageModel(u.size_kb, u.node, u.total, u.free, u.held) for u in snap.hugepages]
        return PoolModel([int(c) for c in snap.pool_cpus], pages, None)

    def watch_dirs(self) -> list[Path]:
        # the enclave table is replaced (renamed into place) on every launch, exit and terminate
        return [home.emulator_run_dir()]

    def exit_info(self, enclave_id: str) -> ExitInfo | None:
        from emulator.exits import read_exit

        return read_exit(enclave_id)

    def kms_endpoint(self) -> str | None:
        from emulator.kms import read_endpoint_file

        return read_endpoint_file()

    def start_local_kms(self) -> LocalKms | None:
        from emulator.kms import LocalKms as Server

        server = Server().start()
        server.write_endpoint_file()
        return server


def emulator_backend(chosen_by: str = "flag") -> Backend:
    # The same interpreter that runs nitrodeck, so a venv install needs no `nitro-emu` on PATH.
    return EmulatorBackend("emulator", OWN_ARGV, "nitro-emu", home.emulator_vsock_dir(), chosen_by)


registry.register("emulator", emulator_backend)
stand_ins.register()
