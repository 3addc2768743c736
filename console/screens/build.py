"""The build dialog: choose an image source, validate, build with progress, then offer to pin PCRs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Select, Static

from console.screens.base import Dialog
from console.screens.host import DialogHost, dialog_host
from console.screens.source import default_output_path
from console.screens.terminate import Confirm
from console.widgets.toggles import GlyphRadioButton
from core.errors import NitrodeckError, UsageError
from core.models import BuildRequest, BuildResult

SOURCES = (
    ("docker", "Docker image (local daemon)"),
    ("uri", "Docker URI"),
    ("rootfs", "rootfs folder (emulator)"),
    ("payload", "the nitrodeck payload"),
)


def validate_build(
    source: str,
    *,
    docker_image: str | None,
    uri: str,
    rootfs: str,
    cmd: str,
    output: str,
    name: str,
    cert: str,
    key: str,
    is_emulator: bool,
) -> BuildRequest:
    """Everything is checked here, before any command runs; raises UsageError with a hint."""
    output = output.strip()
    if not output:
        raise UsageError("an output path is required", where="output", hint="e.g. ~/eifs/app.eif")
    out = Path(output).expanduser()
    if out.suffix != ".eif":
        raise UsageError(f"the output should end in .eif: {output[:80]}", where="output")
    if out.is_dir():
        raise UsageError(f"the output is a folder: {output[:80]}", where="output")
    if bool(cert.strip()) != bool(key.strip()):
        raise UsageError("a signing certificate and a private key go together", where="signing", hint="give both, or neither")
    for label, value in (("signing certificate", cert), ("private key", key)):
        if value.strip() and not Path(value.strip()).expanduser().is_file():
            raise UsageError(f"the {label} file does not exist: {value.strip()[:80]}", where="signing")
    signing = {
        "signing_certificate": str(Path(cert.strip()).expanduser()) if cert.strip() else None,
        "private_key": str(Path(key.strip()).expanduser()) if key.strip() else None,
    }
    name = name.strip() or None  # type: ignore[assignment]
    if source == "docker":
        if not docker_image:
            raise UsageError("pick an image from the local Docker daemon", where="image", hint="or choose Docker URI")
        return BuildRequest(output_file=str(out), docker_uri=docker_image, name=name, **signing)  # type: ignore[arg-type]
    if source == "uri":
        if not uri.strip() or " " in uri.strip():
            raise UsageError("give a Docker image URI such as repo/app:tag", where="uri")
        return BuildRequest(output_file=str(out), docker_uri=uri.strip(), name=name, **signing)  # type: ignore[arg-type]
    if source == "rootfs":
        if not is_emulator:
            raise UsageError("rootfs folders are an emulator input", where="source", hint="real nitro-cli builds from Docker images")
        folder = Path(rootfs.strip()).expanduser()
        if not rootfs.strip() or not folder.is_dir():
            raise UsageError(f"not a folder: {rootfs.strip()[:80] or '(empty)'}", where="rootfs")
        return BuildRequest(output_file=str(out), rootfs=str(folder), cmd=cmd.strip() or None, name=name, **signing)  # type: ignore[arg-type]
    if source == "payload":
        # the lifecycle turns this into the payload's request for the backend: a rootfs build under the
        # emulator, a Docker image built by the local daemon for nitro-cli (core.ops.lifecycle.build)
        return BuildRequest(output_file=str(out), payload=True, name=name, **signing)  # type: ignore[arg-type]
    raise UsageError(f"unknown source {source!r}", where="source")


def derived_name(source: str, docker_image: str | None, uri: str, rootfs: str) -> str:
    """The image name a source gives when none is typed: nitro-cli's default for a Docker URI (the
    part before ':'), the folder's name for a rootfs, nitrodeck-payload for the payload."""
    if source == "docker" and docker_image:
        return docker_image.split(":")[0]
    if source == "uri" and uri.strip():
        return uri.strip().split(":")[0]
    if source == "rootfs" and rootfs.strip():
        return Path(rootfs.strip()).name
    if source == "payload":
        return "nitrodeck-payload"
    return ""


def measurements_text(result: BuildResult) -> Text:
    text = Text()
    text.append("Built ", style="bold green")
    text.append(f"{result.output_file}\n")
    for index, value in result.measurements.pcrs().items():
        text.append(f"PCR{index} ", style="bold")
        text.append(f"{value}\n")
    return text


class BuildDialog(Dialog[None]):
    LAST_FIELD = "key"

    def __init__(self, is_emulator: bool, eif_dir: Path) -> None:
        super().__init__()
        self.is_emulator = is_emulator
        self.eif_dir = eif_dir
        self.result: BuildResult | None = None
        self.request: BuildRequest | None = None
        self.stages: list[str] = []
        #: the emulator builds the payload without Docker; nitro-cli needs a daemon, so the real backend
        #: starts on a URI and offers the payload when the daemon answers (docker_images)
        self.first_source = "payload" if is_emulator else "uri"
        self.source_touched = False

    @property
    def host(self) -> DialogHost:
        return dialog_host(self)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog build-dialog"):
            yield Static("Build an EIF", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                with RadioSet(id="source"):
                    for key, label in SOURCES:
                        # on Nitro the payload is built through the Docker daemon: offered once it answers
                        off = not self.is_emulator and key in ("rootfs", "payload")
                        yield GlyphRadioButton(label, value=key == self.first_source, id=f"src-{key}", disabled=off)
                yield Select[str](compact=True, options=[], prompt="loading the Docker daemon's images...", id="docker-image", classes="src src-docker")
                yield Static("", id="docker-note", classes="src src-docker dialog-hint")
                yield Input(compact=True, placeholder="docker URI, e.g. public.ecr.aws/org/app:1.0", id="uri", classes="src src-uri")
                yield Input(compact=True, placeholder="rootfs folder", id="rootfs", classes="src src-rootfs")
                yield Input(compact=True, placeholder="command inside the enclave (optional)", id="cmd", classes="src src-rootfs")
                with Horizontal(classes="field"):
                    yield Label("output ", classes="field-label")
                    yield Input(compact=True, id="output")
                with Horizontal(classes="field"):
                    yield Label("name ", classes="field-label")
                    yield Input(compact=True, placeholder="image name (used to pin expected PCRs)", id="name")
                with Horizontal(classes="field"):
                    yield Label("cert ", classes="field-label")
                    yield Input(compact=True, placeholder="signing certificate (optional, PEM)", id="cert")
                with Horizontal(classes="field"):
                    yield Label("key ", classes="field-label")
                    yield Input(compact=True, placeholder="private key (optional, PEM; never logged)", id="key", password=True)
                yield Static("", id="progress", classes="hidden")
                yield Static("", id="result", classes="hidden")
                yield Static("", id="dialog-error", classes="hidden")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label="Build", id="build", variant="primary")
                yield Button(compact=True, label="Pin PCRs", id="pin", variant="success", classes="hidden")
                yield Button(compact=True, label="Close", id="close")

    def on_mount(self) -> None:
        self._show_source(self.first_source)
        self._follow_source()
        self.query_one("#source", RadioSet).focus()
        self.host.load_docker_images()

    @property
    def source(self) -> str:
        pressed = self.query_one("#source", RadioSet).pressed_button
        return (pressed.id or f"src-{self.first_source}").removeprefix("src-") if pressed else self.first_source

    def _show_source(self, source: str) -> None:
        for widget in self.query(".src"):
            widget.display = widget.has_class(f"src-{source}")

    @on(RadioSet.Changed, "#source")
    def _source_changed(self, event: RadioSet.Changed) -> None:
        source = self.source
        if source != self.first_source:
            self.source_touched = True
        self._show_source(source)
        self._follow_source()

    @on(Input.Changed, "#uri, #rootfs")
    @on(Select.Changed, "#docker-image")
    def _source_detail_changed(self) -> None:
        self._follow_source()

    def _follow_source(self) -> None:
        """Name and output follow the source (image, URI, folder) until the operator edits them."""
        image = self.query_one("#docker-image", Select).value
        name = derived_name(self.source, image if isinstance(image, str) else None,
                            self.query_one("#uri", Input).value, self.query_one("#rootfs", Input).value)
        self.derive("name", name)
        self.derive("output", default_output_path(name.rsplit("/", 1)[-1] or "image", self.eif_dir))

    def docker_images(self, tags: list[str], problem: str | None) -> None:
        select = self.query_one("#docker-image", Select)
        select.set_options([(t, t) for t in tags])
        note = self.query_one("#docker-note", Static)
        if not self.is_emulator:
            payload = self.query_one("#src-payload", RadioButton)
            payload.disabled = bool(problem)
            self.query_one("#src-docker", RadioButton).disabled = bool(problem)
            if not problem and not self.source_touched:
                payload.value = True  # the daemon answers: the payload can be built, as the default
        if problem:
            select.prompt = "no Docker daemon"
            note.update(problem)
        elif not tags:
            select.prompt = "the daemon has no images"
            note.update("the local Docker daemon has no images; use a URI or another source")
        else:
            select.prompt = "pick an image"
            note.update(f"{len(tags)} image(s) on the local daemon")

    def _request(self) -> BuildRequest:
        image = self.query_one("#docker-image", Select).value
        return validate_build(
            self.source,
            docker_image=image if isinstance(image, str) else None,
            uri=self.query_one("#uri", Input).value,
            rootfs=self.query_one("#rootfs", Input).value,
            cmd=self.query_one("#cmd", Input).value,
            output=self.query_one("#output", Input).value,
            name=self.query_one("#name", Input).value,
            cert=self.query_one("#cert", Input).value,
            key=self.query_one("#key", Input).value,
            is_emulator=self.is_emulator,
        )

    def start(self) -> None:
        self.clear_error()
        try:
            req = self._request()
        except NitrodeckError as err:
            self.show_error(err)
            return
        out = Path(req.output_file).expanduser()
        if self.host.source.output_exists(out):
            # building replaces the file: that is destructive, so it asks first
            def confirmed(yes: bool | None) -> None:
                if yes:
                    self._build(req)

            self.app.push_screen(
                Confirm("Replace the EIF?", f"{out} exists.\nBuilding writes a new EIF over it.", "Replace"), confirmed
            )
            return
        self._build(req)

    def _build(self, req: BuildRequest) -> None:
        self.request = req
        self.stages = []
        self.query_one("#build", Button).disabled = True
        self.query_one("#result", Static).add_class("hidden")
        self.query_one("#pin", Button).add_class("hidden")
        self.stage("queued")
        self.host.start_build(req, self)

    def stage(self, stage: str) -> None:
        self.stages.append(stage)
        box = self.query_one("#progress", Static)
        box.remove_class("hidden")
        box.update(Text("\n".join(f"{'>' if i == len(self.stages) - 1 else ' '} {s}" for i, s in enumerate(self.stages))))

    def action_done(self, kind: str, result: Any) -> None:
        self.query_one("#build", Button).disabled = False
        if kind == "build" and isinstance(result, BuildResult):
            self.result = result
            self.stage("done")
            box = self.query_one("#result", Static)
            box.update(measurements_text(result))
            box.remove_class("hidden")
            pin = self.query_one("#pin", Button)
            pin.remove_class("hidden")
            pin.focus()
            self.call_after_refresh(box.scroll_visible, animate=False)
        elif kind == "pin":
            self.query_one("#pin", Button).add_class("hidden")
            box = self.query_one("#result", Static)
            box.update(Text(f"Pinned as the expected PCRs of {result}", style="bold green"))
            self.call_after_refresh(box.scroll_visible, animate=False)

    def show_error(self, err: BaseException) -> None:
        self.query_one("#build", Button).disabled = False
        super().show_error(err)

    def image_name(self) -> str | None:
        """The pin's key: the name typed, else None (the EIF's own ImageName, as `nitrodeck pin EIF`: the
        Docker URI before its tag, the rootfs folder, the payload's name; the key its enclaves are judged by)."""
        return self.query_one("#name", Input).value.strip() or None

    def submit(self) -> None:
        self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "build":
            self.start()
        elif event.button.id == "pin" and self.result is not None:
            self.host.start_pin(self.image_name(), self.result.measurements, self,
                                str(Path(self.result.output_file).expanduser().absolute()))
        else:
            self.dismiss(None)
