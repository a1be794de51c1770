"""`imagestore tree`: every image exactly once, however deep the chains and however damaged
the parent links on disk; no walk recurses on depth."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import truth_json

import imagestore
from imagestore.cli.forest import draw_forest
from imagestore.service.listing import TreeNode as Node
from imagestore.service.listing import forest


def _write_image(root: Path, comment: str, parent: str | None = None) -> str:
    """An image written on disk as dockerd writes it: its config, and its parent link."""
    raw = json.dumps({"comment": comment, "rootfs": {"type": "layers"}}).encode()
    hex_id = hashlib.sha256(raw).hexdigest()
    (root / "imagedb" / "content" / "sha256" / hex_id).write_bytes(raw)
    if parent is not None:
        _set_parent_on_disk(root, "sha256:" + hex_id, parent)
    return "sha256:" + hex_id


def _set_parent_on_disk(root: Path, image_id: str, parent: str) -> None:
    folder = root / "imagedb" / "metadata" / "sha256" / image_id.split(":", 1)[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "parent").write_text(parent)


def _chain(root: Path, depth: int) -> list[str]:
    ids: list[str] = []
    for i in range(depth):
        ids.append(_write_image(root, f"step {i}", ids[-1] if ids else None))
    return ids


def _walk(nodes: list[dict[str, Any]]) -> list[str]:
    """Every ID of a nested forest, in document order, without recursing."""
    out: list[str] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node["id"])
        stack.extend(reversed(node["children"]))
    return out


def _depth(nodes: list[dict[str, Any]]) -> int:
    deepest, stack = 0, [(n, 1) for n in nodes]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in node["children"])
    return deepest


def test_a_600_deep_chain_nests_600_deep(empty_root: Path, index: Path) -> None:
    ids = _chain(empty_root, 600)
    with imagestore.open(empty_root, index=index) as store:
        roots = forest(store)
    nested = [r.to_dict() for r in roots]
    assert _walk(nested) == ids
    assert _depth(nested) == 600
    lines = draw_forest(roots)
    assert [line.strip() for line in lines] == [i[7:19] for i in ids]  # one column


def test_tree_json_of_a_600_deep_chain(capsys: pytest.CaptureFixture[str],
                                       empty_root: Path) -> None:
    ids = _chain(empty_root, 600)
    result = run_cli(capsys, empty_root, "tree", "--json")
    assert result.code == 0, result.err
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # only for reading it back: Python's decoder recurses
    try:
        assert _walk(result.json()) == ids
    finally:
        sys.setrecursionlimit(limit)


def test_tree_of_a_1000_deep_comb_does_not_recurse(capsys: pytest.CaptureFixture[str],
                                                   empty_root: Path) -> None:
    """Every image of the spine has two children, a leaf and the next spine image: a branch
    point at every level, drawn 1000 deep."""
    spine = [_write_image(empty_root, "spine 0")]
    leaves = []
    for i in range(1, 1000):
        leaves.append(_write_image(empty_root, f"leaf {i}", spine[-1]))
        spine.append(_write_image(empty_root, f"spine {i}", spine[-1]))
    result = run_cli(capsys, empty_root, "tree")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 1999
    shown = [line.strip("│├└─ ") for line in lines]
    assert sorted(shown) == sorted(i[7:19] for i in spine + leaves)
    assert lines[0] == spine[0][7:19]


def _shape(roots: list[Node]) -> list[tuple[str, int]]:
    """(id, depth) in drawing order."""
    out: list[tuple[str, int]] = []
    stack = [(r, 0) for r in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        out.append((node.id, depth))
        stack.extend((c, depth + 1) for c in reversed(node.children))
    return out


def test_tree_of_the_real_store_is_unchanged(capsys: pytest.CaptureFixture[str],
                                             real_root: Path) -> None:
    """The drawing the recursive walk made, pinned for part of the real store."""
    lines = run_cli(capsys, real_root, "tree").out.splitlines()
    start = lines.index("55f3ce50d536  devbase:1.0, devbase:latest")
    assert lines[start:start + 8] == [
        "55f3ce50d536  devbase:1.0, devbase:latest",
        "├── 4fa1692398a4",
        "│   766da62e1f37",
        "│   6dc8227e643f",
        "│   ├── 351f0fda6e4a",
        "│   │   34f8e5a9845a",
        "│   │   4e7cdd6e67ab",
        "│   │   f1e10523c794  web:1.0",
    ]
    nested = run_cli(capsys, real_root, "tree", "--json").json()
    truth = {t["Id"]: t["Parent"] for t in truth_json("image-inspect.json")}
    assert sorted(_walk(nested)) == sorted(truth)
    stack = [(n, "") for n in nested]
    while stack:
        node, parent = stack.pop()
        assert truth[node["id"]] == parent
        stack.extend((c, node["id"]) for c in node["children"])


# -- parent cycles ---------------------------------------------------------------------------
def test_a_parent_cycle_on_disk_drops_no_image(capsys: pytest.CaptureFixture[str],
                                               real_root: Path) -> None:
    """4fa1692398a4 -> 766da62e1f37 -> 6dc8227e643f is a chain; making 6dc8227e643f the
    parent of 4fa1692398a4 closes it into a cycle that no root reaches, with everything the
    web images are built on hanging below it."""
    truth = {t["Id"] for t in truth_json("image-inspect.json")}
    full = {i[7:19]: i for i in truth}
    _set_parent_on_disk(real_root, full["4fa1692398a4"], full["6dc8227e643f"])
    result = run_cli(capsys, real_root, "tree", "--json")
    assert result.code == 0, result.err
    shown = _walk(result.json())
    assert sorted(shown) == sorted(truth)  # each image exactly once
    lines = run_cli(capsys, real_root, "tree").out.splitlines()
    ids = [line.strip("│├└─ ").split()[0] for line in lines if line.strip()]
    assert sorted(ids) == sorted(i[7:19] for i in truth)


class _FakeIndex:
    """An index whose snapshot holds whatever graph a test gives it (a damaged one too)."""

    def __init__(self, ids: list[str], edges: list[tuple[str, str]]) -> None:
        self.ids, self.edges = ids, edges

    @contextlib.contextmanager
    def read(self) -> Iterator[_FakeIndex]:
        yield self

    def graph(self) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
        return sorted(self.ids), self.edges, []


class _FakeStore:
    def __init__(self, ids: list[str], edges: list[tuple[str, str]]) -> None:
        self.index = _FakeIndex(ids, edges)


def test_forest_shows_each_cycle_from_its_smallest_id() -> None:
    """Whatever the index holds: a root chain, a 3-cycle with a tail hanging off it, a
    self-parent, a 2-cycle, and a child with two parent links."""
    ids = ["r", "a", "b", "c", "t1", "t2", "s", "x", "y", "k"]
    edges = [("a", "c"), ("b", "a"), ("c", "b"),  # a <- b <- c <- a
             ("t1", "b"), ("t2", "t1"),           # a tail below b
             ("s", "s"),                          # its own parent
             ("x", "y"), ("y", "x"),              # a 2-cycle
             ("k", "r"), ("k", "a")]              # two parents: drawn under the smaller, a
    roots = forest(_FakeStore(ids, edges))  # type: ignore[arg-type]
    assert _shape(roots) == [
        ("a", 0), ("b", 1), ("c", 2), ("t1", 2), ("t2", 3), ("k", 1),
        ("r", 0),
        ("s", 0),
        ("x", 0), ("y", 1),
    ]
    assert sorted(i for i, _ in _shape(roots)) == sorted(ids)


def test_forest_without_cycles_is_roots_by_id() -> None:
    store = _FakeStore(["c", "a", "b", "d"], [("b", "a"), ("d", "a"), ("e", "a")])
    assert _shape(forest(store)) == [  # type: ignore[arg-type]
        ("a", 0), ("b", 1), ("d", 1), ("c", 0)]
    assert draw_forest([]) == []
