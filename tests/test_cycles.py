"""Parent cycles on disk: recorded, broken at one well-defined edge, every image still shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

import imagestore
from imagestore.sync.cycles import find_cycles

METADATA = "imagedb/metadata/sha256/"


def _acyclic(edges: dict[str, str]) -> bool:
    for start in edges:
        seen = set()
        node: str | None = start
        while node is not None:
            if node in seen:
                return False
            seen.add(node)
            node = edges.get(node)
    return True


@given(st.dictionaries(st.integers(0, 30).map(str), st.integers(0, 30).map(str), max_size=31))
def test_breaking_each_cycle_at_its_smallest_node_leaves_no_cycle(edges: dict[str, str]
                                                                   ) -> None:
    cycles = find_cycles(edges)
    for cycle in cycles:
        assert cycle[0] == min(cycle)
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            assert edges[a] == b
    assert len({c[0] for c in cycles}) == len(cycles)
    assert _acyclic({k: v for k, v in edges.items() if k not in {c[0] for c in cycles}})


def _write_parent(root: Path, child: str, parent: str) -> None:
    """As dockerd writes it: a new file renamed into the image's metadata folder."""
    folder = root / METADATA / child[7:]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".new-parent").write_text(parent)
    os.replace(folder / ".new-parent", folder / "parent")


@pytest.fixture
def chain(real_root: Path, index: Path) -> tuple[str, str, str]:
    """An image with a parent that has a parent: (grandparent, parent, child)."""
    with imagestore.open(real_root, index) as store:
        for child in sorted(store.map()):
            parent = store.get_parent(child)
            grand = parent and store.get_parent(parent)
            if parent and grand:
                return grand, parent, child
    raise AssertionError("the real store has a three-deep chain")


def _ids(nodes: list[dict[str, object]]) -> list[str]:
    out, stack = [], list(nodes)
    while stack:
        node = stack.pop()
        out.append(str(node["id"]))
        stack.extend(node["children"])  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("shape", ["loop of three", "self"])
def test_a_cycle_is_recorded_broken_once_and_every_image_shown(
        capsys: pytest.CaptureFixture[str], real_root: Path, index: Path,
        chain: tuple[str, str, str], shape: str) -> None:
    grand, parent, child = chain
    looped = [grand, parent, child] if shape == "loop of three" else [grand]
    _write_parent(real_root, grand, child if shape == "loop of three" else grand)
    with imagestore.open(real_root, index) as store:
        report = store.sync()
        cycles = [p for p in report.problems if p.kind == "parent-cycle"]
        assert [p.path for p in cycles] == [METADATA + min(looped)[7:]]
        assert store.get_parent(min(looped)) is None  # the one link left out
        everything = sorted(store.map())
        heads = set(store.heads())
        assert heads and heads <= set(everything)
    tree = run_cli(capsys, real_root, "tree", "--json", index=index)
    assert tree.code == 0
    assert sorted(_ids(tree.json())) == everything  # each image once, none dropped
    assert run_cli(capsys, real_root, "fsck", index=index).code == 1
    # Undone on disk: the link is back as the disk has it, the problem gone.
    (real_root / METADATA / grand[7:] / "parent").unlink()
    with imagestore.open(real_root, index) as store:
        assert [p for p in store.last_sync.problems if p.kind == "parent-cycle"] == []  # type: ignore[union-attr]
        assert store.get_parent(grand) is None
        assert store.get_parent(parent) == grand
        assert store.get_parent(child) == parent


def test_a_full_rebuild_breaks_the_same_edge(real_root: Path, index: Path, tmp_path: Path,
                                              chain: tuple[str, str, str]) -> None:
    grand, _, child = chain
    _write_parent(real_root, grand, child)
    graphs: list[dict[str, str | None]] = []
    for full in (False, True):
        with imagestore.open(real_root, index) as store:
            store.sync(full=full)
            graphs.append({i: store.get_parent(i) for i in store.map()})
    with imagestore.open(real_root, tmp_path / "fresh.sqlite") as fresh:
        graphs.append({i: fresh.get_parent(i) for i in fresh.map()})
    assert graphs[0] == graphs[1] == graphs[2]
