"""Layer chains as a sync resolves them: sizes and depths summed down each chain, and a
chain whose parent does not load does not load either (moby's layer store)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore.sync import chains, compact
from imagestore.sync.compact import Link


@given(st.lists(st.integers(-(1 << 40), 1 << 40), max_size=64))
def test_a_packed_chain_splits_into_its_size_and_depth(sizes: list[int]) -> None:
    packed = 0
    for size in sizes:
        packed = compact.stacked(packed, size)
    assert compact.split(packed) == (sum(sizes), len(sizes))


def test_sizes_and_depths_add_up_and_orphans_do_not_load() -> None:
    pool: dict[bytes, bytes] = {}
    base, mid, top = (compact.key(c * 64, pool) for c in "abc")
    orphan, below_orphan = (compact.key(c * 64, pool) for c in "de")
    missing = compact.key("f" * 64, pool)
    links: dict[bytes, Link] = {
        top: Link(mid, 5, b""), mid: Link(base, 3, b""), base: Link(None, 2, b""),
        below_orphan: Link(orphan, 7, b""), orphan: Link(missing, 1, b""),
    }
    valid, problems = chains.resolve(links)
    assert {k: compact.split(v) for k, v in valid.items()} == {
        base: (2, 1), mid: (5, 2), top: (10, 3)}
    assert sorted(p.path for p in problems) == ["layerdb/sha256/" + "d" * 64,
                                                "layerdb/sha256/" + "e" * 64]
    assert {p.kind for p in problems} == {"bad-layer"}


def test_a_cycle_does_not_load_and_does_not_hang() -> None:
    pool: dict[bytes, bytes] = {}
    a, b = compact.key("1" * 64, pool), compact.key("2" * 64, pool)
    valid, problems = chains.resolve({a: Link(b, 1, b""), b: Link(a, 1, b"")})
    assert valid == {}
    assert len(problems) == 2


def test_keys_are_shared_and_only_hex_is_a_key() -> None:
    pool: dict[bytes, bytes] = {}
    assert compact.key("sha256:" + "a" * 64, pool) is compact.key("a" * 64, pool)
    assert compact.digest("sha256:" + "zz") == b""
    with pytest.raises(ValueError):
        compact.key("not hex", pool)
