"""Backend selection: flag > $NITRODECK_BACKEND > auto (real only with nitro-cli on PATH and the device)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core import home
from core.backends.registry import select_backend
from core.errors import ConfigError


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A device node stand-in and a PATH holding an executable named nitro-cli."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "nitro-cli"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    device = tmp_path / "nitro_enclaves"
    device.write_text("")
    monkeypatch.delenv("NITRODECK_BACKEND", raising=False)
    return device, str(bindir)


def test_auto_real_needs_both(fake_env: tuple[Path, str], tmp_path: Path) -> None:
    device, path = fake_env
    assert select_backend(None, device=device, path=path).name == "real"
    assert select_backend("auto", device=device, path=path).name == "real"
    assert select_backend(None, device=tmp_path / "missing", path=path).name == "emulator"
    assert select_backend(None, device=device, path=str(tmp_path / "empty")).name == "emulator"


def test_env_and_flag_precedence(fake_env: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    device, path = fake_env
    monkeypatch.setenv("NITRODECK_BACKEND", "emulator")
    b = select_backend(None, device=device, path=path)
    assert b.name == "emulator" and b.chosen_by == "env"
    b = select_backend("real", device=device, path=path)
    assert b.name == "real" and b.chosen_by == "flag"
    monkeypatch.setenv("NITRODECK_BACKEND", "auto")
    b = select_backend(None, device=device, path=path)
    assert b.name == "real" and b.chosen_by == "auto"


def test_auto_by_name_is_still_automatic(fake_env: tuple[Path, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # NITRODECK_BACKEND=auto (any case) or --backend auto picks like no choice at all: the emulator it
    # lands on was not named, so verify-attestation must not widen trust for it
    _, path = fake_env
    for env in ("auto", " AUTO "):
        monkeypatch.setenv("NITRODECK_BACKEND", env)
        b = select_backend(None, device=tmp_path / "missing", path=path)
        assert (b.name, b.chosen_by) == ("emulator", "auto"), env
    monkeypatch.setenv("NITRODECK_BACKEND", "emulator")
    b = select_backend("auto", device=tmp_path / "missing", path=path)
    assert (b.name, b.chosen_by) == ("emulator", "auto")


def test_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        select_backend("qemu")
    assert info.value.where == "--backend" and "emulator" in (info.value.hint or "")
    monkeypatch.setenv("NITRODECK_BACKEND", "bogus")
    with pytest.raises(ConfigError) as info:
        select_backend(None)
    assert info.value.where == "$NITRODECK_BACKEND"


def test_backend_shapes(nd_home: Path) -> None:
    emu = select_backend("emulator")
    assert emu.argv == (sys.executable, "-m", "emulator") and emu.display_name == "nitro-emu" and emu.is_emulator
    assert emu.vsock_dir == home.emulator_vsock_dir() and str(nd_home) in str(emu.vsock_dir)
    t = emu.transport()
    assert t.emulated and t.emulated_dir == emu.vsock_dir and t.own_cid == 3
    real = select_backend("real")
    assert real.argv == ("nitro-cli",) and real.display_name == "nitro-cli" and real.vsock_dir is None
    assert not real.is_emulator and not real.transport().emulated
