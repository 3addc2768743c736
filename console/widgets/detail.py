"""The detail pane: everything about the selected enclave, PCRs expected vs actual first."""

from __future__ import annotations

import json

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from core.models import EifInfo, EnclaveInfo

DEBUG_WARNING = (
    "DEBUG MODE: this enclave's attestation documents carry all-zero PCRs. The values below are "
    "the EIF's build measurements; a verifier sees zeros and must not trust this enclave."
)


def render_detail(
    enclave: EnclaveInfo | None,
    verdict: str,
    expected: dict[int, str] | None,
    exited: bool = False,
    eif: EifInfo | None = None,
) -> Text:
    text = Text()
    if enclave is None:
        text.append("No enclave selected.\n", style="dim")
        text.append("Launch one with `l` (or build an EIF first with `b`).", style="dim")
        return text
    text.append(f"{enclave.label}\n", style="bold")
    text.append(f"{enclave.enclave_id}\n", style="dim")
    state = "EXITED (kept console log below)" if exited else enclave.state
    text.append(f"state {state}  flags {enclave.flags}  CID {enclave.cid}  PID {enclave.process_id}\n")
    text.append(f"CPUs {','.join(map(str, enclave.cpu_ids)) or '-'} ({enclave.cpu_count})  memory {enclave.memory_mib} MiB\n")
    if enclave.image_name or enclave.image_version:
        text.append(f"image {enclave.image_name or '?'} {enclave.image_version or ''}\n")
    if enclave.eif_path:
        text.append(f"EIF {enclave.eif_path}\n")
    if eif is not None:
        signed = "signed" if eif.is_signed else "unsigned"
        if eif.is_signed and eif.signature_check is False:
            signed = "signature INVALID"
        text.append(f"EIF v{eif.version} {eif.image_name or '?'} {eif.image_version or ''}  {signed}  CRC {'ok' if eif.check_crc else 'BAD'}\n")
        if eif.metadata:
            text.append(f"EIF metadata {json.dumps(eif.metadata, sort_keys=True)[:300]}\n", style="dim")
    if enclave.metadata:
        meta = json.dumps(enclave.metadata, sort_keys=True)
        text.append(f"metadata {meta[:300]}\n", style="dim")
    if enclave.debug_mode:
        text.append("\n")
        text.append(DEBUG_WARNING, style="bold black on yellow")
        text.append("\n")
    text.append("\nPCRs: ")
    style = {"match": "bold green", "mismatch": "bold red", "debug": "bold yellow"}.get(verdict, "dim")
    label = {
        "match": "MATCH expected",
        "mismatch": "MISMATCH: not the pinned image",
        "debug": "debug mode (attests zeros)",
        "unpinned": "no expected PCRs pinned (P pins these)",
    }.get(verdict, verdict)
    text.append(label + "\n", style=style)
    actual = enclave.measurements.pcrs() if enclave.measurements else {}
    wanted = dict(expected) if expected else {}
    if not actual:
        text.append("(no measurements reported)\n", style="dim")
    for index in sorted(set(actual) | set(wanted)):
        have = actual.get(index)
        want = wanted.get(index)
        mark, mark_style = ("  ", "")
        if want is not None and have is not None:
            mark, mark_style = ("ok", "bold green") if want == have else ("!!", "bold red")
        text.append(f"PCR{index:<2}", style="bold")
        text.append(f" {mark} ", style=mark_style)
        text.append(f"actual   {have or '-'}\n")
        if want is not None:
            text.append("        expected " , style="dim")
            text.append(f"{want}\n", style="green" if want == have else "red")
    return text


class DetailPane(VerticalScroll):
    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(render_detail(None, "unpinned", None), id="detail-body")

    def show(
        self,
        enclave: EnclaveInfo | None,
        verdict: str,
        expected: dict[int, str] | None,
        exited: bool = False,
        eif: EifInfo | None = None,
    ) -> None:
        self.query_one("#detail-body", Static).update(render_detail(enclave, verdict, expected, exited, eif))
