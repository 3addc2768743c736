"""Messages workers post to the UI. Workers never touch widgets; the App's handlers do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from console.screens.source import Snapshot


@dataclass
class StatusRefreshed(Message):
    """A fresh snapshot of enclaves and resources arrived from the refresh worker."""

    snapshot: Snapshot


@dataclass
class CommandRan(Message):
    """The driver ran one nitro-cli command (core.backends.driver.CommandRecord or an equivalent)."""

    record: Any


@dataclass
class ConsoleEnded(Message):
    """The console stream of an enclave ended (the enclave exited, or it is not in debug mode)."""

    enclave_id: str
    reason: str


@dataclass
class ActionFinished(Message):
    """A mutating action completed; ``result`` is its dataclass (BuildResult, RunInfo, ...)."""

    kind: str
    result: Any


@dataclass
class DockerImages(Message):
    """The local Docker daemon's image tags, or why there are none."""

    tags: list[str]
    problem: str | None = None


@dataclass
class BuildStage(Message):
    """Progress of a build, one stage at a time."""

    stage: str


@dataclass
class DoctorDone(Message):
    """The doctor's checks finished (core.ops.doctor.DoctorReport)."""

    report: Any
