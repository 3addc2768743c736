"""core.files.read_limited: the one bounded reader for operator-named files."""

from pathlib import Path

import pytest

from core.errors import InputTooLarge, UsageError
from core.files import read_limited


def test_reads_whole_file_up_to_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 10)
    assert read_limited(f, 10) == b"a" * 10
    with pytest.raises(InputTooLarge) as err:
        read_limited(f, 9, where="--payload")
    assert err.value.where == "--payload" and "larger than 9 bytes" in err.value.message


def test_unreadable_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        read_limited(tmp_path / "missing.pem", 100)
    assert "missing.pem" in err.value.message and err.value.where.endswith("missing.pem")
