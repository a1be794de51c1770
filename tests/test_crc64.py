"""Go's ``hash/crc64`` with the ISO table, as tar-split records it for every file and moby
checks it: the native checksum (fastcrc) against the pure-Python reference and an
independent table-driven computation written here as Go's ``crc64.MakeTable`` and ``Update``."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import warnings

import pytest

from imagestore.moby import save_go
from imagestore.moby.save_go import CHECK, crc64, crc64_python

ISO = 0xD800000000000000  # Go's crc64.ISO: the reflected x^64 + x^4 + x^3 + x + 1
M64 = (1 << 64) - 1


def _go_table() -> list[int]:
    """Go's ``makeTable(ISO)``."""
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ ISO if crc & 1 else crc >> 1
        table.append(crc)
    return table


GO_TABLE = _go_table()


def go_update(crc: int, data: bytes) -> int:
    """Go's ``crc64.Update(crc, tab, p)`` (the byte-at-a-time loop of ``update``)."""
    crc = ~crc & M64
    for b in data:
        crc = GO_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return ~crc & M64


# Go: crc64.Checksum([]byte(s), crc64.MakeTable(crc64.ISO))
VECTORS = {
    b"": 0,
    b"123456789": 0xB90956C775A41001,  # the catalogued CRC-64/GO-ISO check value
    b"hello": 0x3C3EEEE2D8100000,
    b"hello world": 0xB9CF3F572AD9AC3E,
}


def test_native_checksum_is_in_use() -> None:
    from fastcrc.crc64 import go_iso

    assert crc64 is go_iso  # no wrapper between the stream and the native call
    data, value = CHECK
    assert VECTORS[data] == value


@pytest.mark.parametrize("data", list(VECTORS))
def test_known_vectors(data: bytes) -> None:
    want = VECTORS[data]
    assert go_update(0, data) == want
    assert crc64_python(data) == want
    assert crc64(data) == want
    assert crc64(data, 0) == want


def test_native_equals_the_reference_and_go_s_table() -> None:
    rng = random.Random(64)
    for size in [*range(0, 300), 511, 512, 513, 4095, 4096, 65_537, 1 << 20]:
        data = rng.randbytes(size)
        start = rng.getrandbits(64)
        want = crc64_python(data)
        assert crc64(data) == want, size
        assert crc64(data, start) == crc64_python(data, start), size
        if size <= 4096:
            assert go_update(0, data) == want, size
            assert go_update(start, data) == crc64(data, start), size


def test_continued_over_chunks_as_the_stream_does() -> None:
    """``crc64(chunk, previous)`` is Go's ``Update``: over any cut, the whole file's CRC."""
    rng = random.Random(7)
    data = rng.randbytes(300_000)
    for cuts in ([0, 1, 7, 8, 95, 96, 97, 70_000, 70_001, 300_000],
                 [0, *sorted(rng.sample(range(1, 300_000), 40)), 300_000]):
        crc = 0
        for a, b in itertools.pairwise(cuts):
            crc = crc64(memoryview(data)[a:b], crc)
        assert crc == crc64(data) == crc64_python(data)
    assert crc64(bytearray(b"hello world")) == VECTORS[b"hello world"]
    assert crc64(b"", VECTORS[b"hello"]) == VECTORS[b"hello"]


def test_a_missing_native_package_falls_back_with_one_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastcrc.crc64", None)  # the import now fails
    fast, why = save_go._native()
    assert fast is None and "fastcrc cannot be imported" in why
    monkeypatch.setattr(save_go, "_WHY_SLOW", why)
    monkeypatch.setattr(save_go, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert save_go._fallback(b"hello world") == VECTORS[b"hello world"]
        assert save_go._fallback(b"world", save_go._fallback(b"hello ")) == \
            VECTORS[b"hello world"]
    assert len(caught) == 1
    assert "pure Python" in str(caught[0].message) and "fastcrc" in str(caught[0].message)


def test_a_process_without_fastcrc_still_checksums() -> None:
    code = ("import sys, warnings; sys.modules['fastcrc.crc64'] = None\n"
            "from imagestore.moby.save_go import crc64\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    print(hex(crc64(b'123456789')), hex(crc64(b'9', crc64(b'12345678'))), len(w))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60).stdout.split()
    assert out == [hex(CHECK[1]), hex(CHECK[1]), "1"]
