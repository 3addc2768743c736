"""The backend interface: what nitrodeck needs from whatever runs enclaves.

A backend names the nitro-cli-compatible program to run (``argv``), how the parent reaches enclaves
over vsock (``transport()``), and answers the questions core would otherwise have to ask an
emulator directly: where the allocator's model is, which local KMS to use, which stand-in kernel
blobs exist. The real backend answers "none" to the emulator's questions; the emulator implements
them in ``emulator/backend.py`` and registers itself with :mod:`core.backends.registry`, so core
never imports the emulator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.channel.vsock import Transport
    from core.models import EnclaveInfo


@dataclass(frozen=True)
class HugepageModel:
    """One hugepage size on one NUMA node, as an allocator model sees it."""

    size_kb: int
    node: int
    total: int
    free: int
    held: int


@dataclass(frozen=True)
class PoolModel:
    """The CPU pool and hugepages a backend's allocator model holds (the emulator's; none on Nitro,
    where sysfs is the truth). ``error`` says why the pools are empty, as a failed allocator would."""

    pool_cpus: list[int]
    hugepages: list[HugepageModel]
    error: str | None = None


@dataclass(frozen=True)
class ExitInfo:
    """How an enclave ended, as the thing that ran it saw it (the emulator's supervisor; none on Nitro,
    where nitro-cli keeps no record of an enclave once it is gone)."""

    ended_at: float  # Unix time
    status: int | None = None  # the enclave process's exit status; negative: killed by that signal
    started_at: float | None = None


@dataclass(frozen=True)
class Answer:
    """What a command printed and how it exited, given without starting its process (:meth:`Backend.answer`)."""

    exit_code: int
    stdout: str
    stderr: str


class AnswerAbandoned(Exception):  # noqa: N818 - an outcome, like TimeoutError
    """An answer given in-process stopped waiting: at the caller's deadline, or (``cancelled``) on its request."""

    def __init__(self, cancelled: bool = False) -> None:
        super().__init__("cancelled" if cancelled else "deadline passed")
        self.cancelled = cancelled


class LocalKms(Protocol):
    """A KMS endpoint a backend runs on loopback for `nitrodeck up` (the emulator's moto + Recipient layer)."""

    @property
    def port(self) -> int: ...

    @property
    def endpoint_url(self) -> str: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    name: str  # "real" | "emulator"
    argv: tuple[str, ...]
    display_name: str  # what the operator would type: "nitro-cli" or "nitro-emu"
    vsock_dir: Path | None = None
    #: how the choice was made ("flag", "env", "auto"), shown by `status`
    chosen_by: str = field(default="flag", compare=False)

    @property
    def is_emulator(self) -> bool:
        """Emulator-only capabilities (build flags, test-root trust, no run timeout) key off this."""
        return self.name == "emulator"

    def transport(self) -> Transport:
        """The parent's vsock transport: AF_VSOCK on Nitro, the emulated folder otherwise."""
        from core.channel.vsock import parent_transport  # asyncio: only commands that talk to enclaves pay

        return parent_transport(self.vsock_dir)

    def watch_dirs(self) -> list[Path]:
        """Folders whose entries change when an enclave starts or ends (core.ops.watch watches them):
        nitro-cli's per-enclave sockets folder, ``$NITRO_CLI_SOCKETS_PATH`` or ``/run/nitro_enclaves``."""
        return [Path(os.environ.get("NITRO_CLI_SOCKETS_PATH") or "/run/nitro_enclaves")]

    # --- what only an emulated world has; the real backend answers None -----------------------------

    def answer(
        self,
        args: Sequence[str],
        deadline: float,
        cancelled: Callable[[], bool] | None = None,
        *,
        read_only: bool = False,
    ) -> Answer | None:
        """``argv + args`` answered in this process, exactly as the process would have answered it, or
        None: run the process. The emulator answers its read commands so (describe-enclaves: its state
        is files and sockets this process can reach), sparing a Python start per describe; nitro-cli is
        a program with its own contract, so the real backend always runs it. ``read_only``: as the
        process would with ``NITRODECK_READ_ONLY=1`` (core.backends.real.backend_env). Gives up with
        :class:`AnswerAbandoned` at ``deadline`` (``time.monotonic()``) or when ``cancelled()``."""
        return None

    def pool_model(self, enclaves: list[EnclaveInfo], *, read_only: bool = False) -> PoolModel | None:
        """The allocator's modelled pools, or None where sysfs is the truth. ``read_only``: write nothing
        to find them (a world never set up is described by its defaults, computed in memory)."""
        return None

    def exit_info(self, enclave_id: str) -> ExitInfo | None:
        """How an enclave that is gone ended, or None when nothing recorded it."""
        return None

    def kms_endpoint(self) -> str | None:
        """A KMS endpoint URL to use instead of AWS's regional one, or None for AWS."""
        return None

    def start_local_kms(self) -> LocalKms | None:
        """Start a loopback KMS for `up` (``kms_endpoint: local``), or None where there is none."""
        return None
