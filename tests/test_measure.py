"""PCR computation: nitro-cli.md §5 vectors, streaming over chunk boundaries, pcr --input."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core.eif import measure
from core.eif.format import EifWriter, SectionType
from core.eif.measure import extend, measure_eif, pcr_of_bytes, pcr_of_file

K, C, M, R = SectionType.KERNEL, SectionType.CMDLINE, SectionType.METADATA, SectionType.RAMDISK

VEC_PCR0 = "61fd2b06210a933b3db5e15c5752e394894bb097f7f1d96ad1f55a7525d0d7aa2c63b235f44420b12d8376cc392bdefb"
VEC_PCR1 = "a6d35ce3e7ba80048a2b23da9b15063726a7cea90e16e9d6934e92a15aa1896fd54de706310e2fbc585d9c37db9c1805"
VEC_PCR2 = "5f699ae4300525c628f5c96fc521729dd6ca1a2c07cb07b69e7ae9e3fa935cfd7cc83b3e26d89201a486d9db2405c562"
EMPTY = "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"
PCR3_ARN = "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6"


def reference(kernel: bytes, cmdline: bytes, ramdisks: list[bytes]) -> tuple[str, str, str]:
    def pcr(content: bytes) -> str:
        return hashlib.sha384(b"\0" * 48 + hashlib.sha384(content).digest()).hexdigest()

    return (
        pcr(kernel + cmdline + b"".join(ramdisks)),
        pcr(kernel + cmdline + ramdisks[0]),
        pcr(b"".join(ramdisks[1:])),
    )


def test_self_computed_vectors(tmp_path: Path) -> None:
    w = EifWriter().add(K, b"KERNEL").add(C, b"console=ttyS0").add(M, b"{}")
    w.add(R, b"RAMDISK0").add(R, b"RAMDISK1").write(tmp_path / "t.eif")
    m = measure_eif(tmp_path / "t.eif")
    assert (m.pcr0, m.pcr1, m.pcr2, m.pcr8) == (VEC_PCR0, VEC_PCR1, VEC_PCR2, None)
    assert m.as_dict()["HashAlgorithm"] == "Sha384 { ... }"


def test_metadata_is_not_measured(tmp_path: Path) -> None:
    a = EifWriter().add(K, b"KERNEL").add(C, b"console=ttyS0").add(M, b'{"x":1}').add(R, b"RAMDISK0")
    b = EifWriter().add(K, b"KERNEL").add(C, b"console=ttyS0").add(M, b'{"y":2}').add(R, b"RAMDISK0")
    a.write(tmp_path / "a.eif")
    b.write(tmp_path / "b.eif")
    ma, mb = measure_eif(tmp_path / "a.eif"), measure_eif(tmp_path / "b.eif")
    assert ma == mb
    assert ma.pcr0 == ma.pcr1  # a single ramdisk: PCR0 == PCR1, PCR2 over nothing
    assert ma.pcr2 == EMPTY


def test_pcr_of_bytes_and_file(tmp_path: Path) -> None:
    assert pcr_of_bytes(b"") == EMPTY
    # PCR3 is one extend with the raw ARN (not pre-hashed): checks extend() against the UG's value
    assert extend(b"\0" * 48, b"arn:aws:iam::123456789012:role/Webserver").hex() == PCR3_ARN
    assert pcr_of_bytes(b"arn:aws:iam::123456789012:role/Webserver") != PCR3_ARN
    f = tmp_path / "in.bin"
    f.write_bytes(b"z" * 3_000_001)
    assert pcr_of_file(f) == pcr_of_bytes(f.read_bytes())
    assert extend(b"\0" * 48, b"abc") == hashlib.sha384(b"\0" * 48 + b"abc").digest()


def test_chunk_boundaries_and_many_ramdisks(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # tiny buffers force many hand-overs between the reader and the PCR2 thread
    monkeypatch.setattr(measure, "CHUNK", 7)
    kernel, cmdline = bytes(range(200)), b"reboot=k console=ttyS0"
    rds = [b"first" * 13, b"second" * 29, b"", b"fourth" * 3]
    w = EifWriter().add(K, kernel).add(C, cmdline).add(M, b"{}")
    for rd in rds:
        w.add(R, rd)
    w.write(tmp_path / "m.eif")
    m = measure_eif(tmp_path / "m.eif")
    assert (m.pcr0, m.pcr1, m.pcr2) == reference(kernel, cmdline, rds)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=300),
    st.binary(max_size=50),
    st.lists(st.binary(max_size=2000), min_size=1, max_size=4),
    st.integers(1, 4096),
)
def test_property_matches_reference(kernel: bytes, cmdline: bytes, rds: list[bytes], chunk: int) -> None:
    import tempfile

    old = measure.CHUNK
    measure.CHUNK = chunk
    try:
        with tempfile.TemporaryDirectory() as tmp:
            w = EifWriter().add(K, kernel).add(C, cmdline)
            for rd in rds:
                w.add(R, rd)
            w.write(Path(tmp) / "p.eif")
            m = measure_eif(Path(tmp) / "p.eif")
    finally:
        measure.CHUNK = old
    assert (m.pcr0, m.pcr1, m.pcr2) == reference(kernel, cmdline, rds)


def test_default_chunking_on_a_multi_chunk_ramdisk(tmp_path: Path) -> None:
    # 13 MiB: more chunks than buffers, so buffers are recycled while the PCR2 thread still hashes
    block = bytes(range(256)) * 4096
    big = tmp_path / "rd1.bin"
    with open(big, "wb") as fh:
        for i in range(13):
            fh.write(bytes([i]) + block[1:])
    w = EifWriter().add(K, b"kernel").add(C, b"console=ttyS0").add(R, b"rd0").add(R, big)
    w.write(tmp_path / "big.eif")
    data = big.read_bytes()
    m = measure_eif(tmp_path / "big.eif")
    assert (m.pcr0, m.pcr1, m.pcr2) == reference(b"kernel", b"console=ttyS0", [b"rd0", data])


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=3000),
    st.lists(st.binary(max_size=9000), min_size=1, max_size=3),
    st.binary(max_size=500),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_crc_in_the_measuring_pass_is_the_crc_of_the_file(
    tmp_path_factory, kernel: bytes, ramdisks: list[bytes], meta: bytes, flip: int
) -> None:  # type: ignore[no-untyped-def]
    # describe-eif takes the CRC from the same read as the PCRs: it must equal zlib.crc32 over
    # header[0:544] + every section header and its data, computed independently here, also when the
    # file was changed after writing (the CRC then no longer matches the header's)
    import zlib

    from core.eif.format import read_eif

    path = tmp_path_factory.mktemp("crc") / "x.eif"
    w = EifWriter().add(K, kernel).add(C, b"console=ttyS0").add(M, meta)
    for rd in ramdisks:
        w.add(R, rd)
    w.write(path)
    data = bytearray(path.read_bytes())
    spans = [(s.data_offset, s.size) for s in read_eif(path).sections if s.size]
    if spans and flip % 2:
        start, size = spans[flip % len(spans)]
        data[start + flip % size] ^= 0xFF  # one flipped byte of some section's data
    path.write_bytes(bytes(data))
    eif = read_eif(path)
    expected = zlib.crc32(bytes(data[:544]))
    for sec in eif.sections:
        expected = zlib.crc32(bytes(data[sec.offset : sec.data_offset + sec.size]), expected)
    with_crc = measure.measure(eif, with_crc=True)
    assert eif.computed_crc == expected
    assert eif.crc_ok == (expected == eif.header.crc32)
    assert with_crc == measure.measure(read_eif(path))
    assert (with_crc.pcr0, with_crc.pcr1, with_crc.pcr2) == reference(
        data_of(data, eif, K)[0], data_of(data, eif, C)[0], data_of(data, eif, R)
    )


def data_of(data: bytearray, eif, kind: SectionType) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [bytes(data[s.data_offset : s.data_offset + s.size]) for s in eif.sections if s.type == kind]
