"""build_eif from a real Docker image on the private dockerd: FROM scratch + a static binary."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.eif.build import BuildError, build_eif, read_image_spec
from core.eif.format import read_eif
from core.models import BuildRequest
from tests.conftest import require

T1 = "2024-05-01T12:00:00+00:00"
HELLO_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    const char *g = getenv("GREETING");
    printf("%s %s\n", g ? g : "(none)", argc > 1 ? argv[1] : "(noarg)");
    return 0;
}
"""


@pytest.fixture
def docker_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ctx"
    folder.mkdir()
    # a real static binary, run after docker build -> save -> layers -> cpio -> EIF -> unpack: without a
    # compiler the test skips (fails in CI) rather than quietly proving less with a plain file
    require(shutil.which("gcc") is not None, "gcc is not installed (scripts/system-deps.sh installs it)")
    (tmp_path / "hello.c").write_text(HELLO_C)
    subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(folder / "hello"), str(tmp_path / "hello.c")],
        check=True,
        timeout=120,
    )
    (folder / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY hello /hello\n"
        "ENV GREETING=hi\n"
        'ENTRYPOINT ["/hello"]\n'
        'CMD ["world"]\n'
    )
    return folder


@pytest.fixture
def tag(docker_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"nd-eif-test-{uuid.uuid4().hex[:10]}:v1"
    yield name
    try:
        docker_client.images.remove(name, force=True)
    except Exception:  # noqa: BLE001 - best effort cleanup of our own tag
        pass


@pytest.mark.docker
def test_docker_build_to_eif_and_back(docker_client, docker_dir: Path, tag: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    req = BuildRequest(output_file=str(tmp_path / "a.eif"), docker_uri=tag, docker_dir=str(docker_dir))
    first = build_eif(req, docker_client=docker_client, build_time=T1, progress=lines.append)
    assert lines == ["Start building the Enclave Image...", "Enclave Image successfully created."]
    image = docker_client.images.get(tag)
    meta = read_eif(first.output_file).metadata()
    assert meta is not None
    assert meta["ImageName"] == tag.split(":")[0]
    assert meta["ImageVersion"] == image.id.removeprefix("sha256:")
    assert meta["DockerInfo"]["Id"] == image.id and tag in meta["DockerInfo"]["RepoTags"]

    spec = read_image_spec(first.output_file, tmp_path / "unpacked")
    assert spec.cmd == ["/hello", "world"]
    assert "GREETING=hi" in spec.env
    hello = spec.rootfs / "hello"
    assert hello.is_file()
    # the static binary came through docker build -> save -> layers -> cpio -> EIF -> unpack intact
    out = subprocess.run([str(hello), "world"], env={"GREETING": "hi"}, capture_output=True, text=True, timeout=10)
    assert out.stdout == "hi world\n"

    # the image is local now: no docker dir, same bytes, and nitro-cli's "locally available" line
    lines.clear()
    req2 = BuildRequest(output_file=str(tmp_path / "b.eif"), docker_uri=tag)
    second = build_eif(req2, docker_client=docker_client, build_time=T1, progress=lines.append)
    assert "Using the locally available Docker image..." in lines
    assert Path(second.output_file).read_bytes() == Path(first.output_file).read_bytes()

    # building from the Dockerfile again re-tags the image; the EIF must still be the same
    again = build_eif(
        BuildRequest(output_file=str(tmp_path / "a2.eif"), docker_uri=tag, docker_dir=str(docker_dir)),
        docker_client=docker_client,
        build_time=T1,
    )
    assert Path(again.output_file).read_bytes() == Path(first.output_file).read_bytes()

    # the same image through `docker save` gives the same filesystem, hence the same PCR2
    tarball = tmp_path / "img.tar"
    with open(tarball, "wb") as fh:
        for chunk in image.save(named=True):
            fh.write(chunk)
    third = build_eif(
        BuildRequest(output_file=str(tmp_path / "c.eif"), image_tar=str(tarball)), build_time=T1
    )
    assert third.measurements.pcr2 == first.measurements.pcr2


@pytest.mark.docker
def test_docker_errors(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = f"nd-missing-{uuid.uuid4().hex[:8]}:none"
    with pytest.raises(BuildError) as err:
        build_eif(
            BuildRequest(output_file=str(tmp_path / "m.eif"), docker_uri=missing), docker_client=docker_client
        )
    assert err.value.cli_code == "E50"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text("FROM scratch\nCOPY does-not-exist /x\n")
    with pytest.raises(BuildError) as err:
        build_eif(
            BuildRequest(output_file=str(tmp_path / "b.eif"), docker_uri=missing, docker_dir=str(broken)),
            docker_client=docker_client,
        )
    assert err.value.cli_code == "E49"
    assert not (tmp_path / "m.eif").exists() and not (tmp_path / "b.eif").exists()
