"""Layer chains as a sync resolves them: sizes and depths summed down each chain, and a
chain whose parent does not load does not load either (moby's layer store)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import chains


@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, (1 << 32) - 1))
def test_a_packed_chain_splits_into_its_size_and_depth(size: int, depth: int) -> None:
    assert chains.split(size * chains.DEPTHS + depth) == (size, depth)


def test_sizes_and_depths_add_up_and_orphans_do_not_load() -> None:
    pool: dict[bytes, bytes] = {}
    base, mid, top = (chains.key(c * 64, pool) for c in "abc")
    orphan, below_orphan = (chains.key(c * 64, pool) for c in "de")
    missing = chains.key("f" * 64, pool)
    links: dict[bytes, chains.Link] = {
        top: (mid, 5, b""), mid: (base, 3, b""), base: (None, 2, b""),
        below_orphan: (orphan, 7, b""), orphan: (missing, 1, b""),
    }
    valid, problems = chains.resolve(links)
    assert {k: chains.split(v) for k, v in valid.items()} == {
        base: (2, 1), mid: (5, 2), top: (10, 3)}
    assert sorted(p.path for p in problems) == ["layerdb/sha256/" + "d" * 64,
                                                "layerdb/sha256/" + "e" * 64]
    assert {p.kind for p in problems} == {"bad-layer"}


def test_a_cycle_does_not_load_and_does_not_hang() -> None:
    pool: dict[bytes, bytes] = {}
    a, b = chains.key("1" * 64, pool), chains.key("2" * 64, pool)
    valid, problems = chains.resolve({a: (b, 1, b""), b: (a, 1, b"")})
    assert valid == {}
    assert len(problems) == 2


def test_keys_are_shared_and_only_hex_is_a_key() -> None:
    pool: dict[bytes, bytes] = {}
    assert chains.key("sha256:" + "a" * 64, pool) is chains.key("a" * 64, pool)
    assert chains.digest("sha256:" + "zz") == b""
    with pytest.raises(ValueError):
        chains.key("not hex", pool)
