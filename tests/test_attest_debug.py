"""verify-attestation refuses a debug-mode document (all-zero PCRs) unless --allow-debug (issue 10)."""

from __future__ import annotations

import json

from tests import conftest
from tests.test_attestation_cli import run

DEBUG_TS = "1725719886508"  # blocky-nitrite-debug-2024-09-07.bin's own timestamp: its chain is valid then
PROD_TS = "1725719859545"


def test_debug_document_refused_unless_allowed() -> None:
    doc = conftest.testdata("attestation", "blocky-nitrite-debug-2024-09-07.bin")
    refused = run("verify-attestation", str(doc), "--at", DEBUG_TS, "--json")
    assert refused.returncode == 3, refused.stderr
    checks = {c["name"]: c for c in json.loads(refused.stdout)["checks"]}
    assert checks["debug"]["ok"] is False and "debug-mode document" in checks["debug"]["detail"]
    assert [name for name, c in checks.items() if c["ok"] is False] == ["debug"]

    human = run("verify-attestation", str(doc), "--at", DEBUG_TS)
    assert human.returncode == 3 and "NOT VERIFIED" in human.stdout and "debug" in human.stdout

    allowed = run("verify-attestation", str(doc), "--at", DEBUG_TS, "--allow-debug", "--json")
    assert allowed.returncode == 0, allowed.stdout
    assert "debug" not in {c["name"] for c in json.loads(allowed.stdout)["checks"]}


def test_production_document_passes_the_debug_check() -> None:
    doc = conftest.testdata("attestation", "blocky-nitrite-2024-09-07.bin")
    done = run("verify-attestation", str(doc), "--at", PROD_TS, "--json")
    assert done.returncode == 0, done.stdout
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["debug"]["ok"] is True
