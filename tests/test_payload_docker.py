"""`nitrodeck build --payload --docker-uri TAG`: the payload built as a Docker image, then an EIF that signs."""

import json
import subprocess
import sys
from pathlib import Path

from core.backends.registry import select_backend
from core.eif.build import read_image_spec
from core.models import LaunchRequest
from core.ops.lifecycle import Lifecycle
from core.ops.testsign import test_sign as run_test_sign


def test_payload_through_docker_launches_and_signs(nd_home: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    out = nd_home / "payload-docker.eif"
    res = subprocess.run(
        [sys.executable, "-m", "console", "build", "--payload", "--docker-uri", "nitrodeck-payload:test",
         "--output-file", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["Measurements"]["PCR0"]
    image = docker_client.images.get("nitrodeck-payload:test")
    assert image.attrs["Config"]["Cmd"] == ["python3", "-m", "enclave_app", "--port", "5005"]

    spec = read_image_spec(out, nd_home / "spec")
    assert spec.cmd == ["python3", "-m", "enclave_app", "--port", "5005"]
    assert (spec.rootfs / "app" / "enclave_app" / "server.py").is_file()

    lc = Lifecycle(select_backend("emulator"))
    run = lc.launch(LaunchRequest(eif_path=str(out), memory_mib=256, cpu_count=2, name="docker-payload"))
    report = run_test_sign(lc, run.enclave_id, b"built through docker")
    assert report.ok, [c for c in report.checks if not c.ok]
    lc.terminate_all()
