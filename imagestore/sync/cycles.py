"""Parent cycles on disk (a ``parent`` file naming a descendant, or the image itself).

moby would loop on them; here each cycle is broken at one well-defined edge, the parent link
of the cycle's smallest image ID, which the index leaves out and records as a
``parent-cycle`` problem. Every traversal (heads, children, the tree, the views) then sees
the same acyclic graph. A broken edge is looked at again by the next pass that changes any
image, so a cycle undone on disk comes back as a plain link."""

from __future__ import annotations

from collections.abc import Iterable

from imagestore.moby.digest import PREFIX
from imagestore.moby.root import METADATA
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.read import read_metadata
from imagestore.sync.state import Pass


def find_cycles(edges: dict[str, str]) -> list[list[str]]:
    """The cycles of a graph where each node has at most one parent (child -> parent), each
    listed from its smallest node; linear in the edges, no recursion."""
    state: dict[str, int] = {}  # 1: on the walk being made, 2: done
    cycles = []
    for start in edges:
        walk = []
        node: str | None = start
        while node is not None and node not in state:
            state[node] = 1
            walk.append(node)
            node = edges.get(node)
        if node is not None and state[node] == 1:  # the walk met itself
            cycle = walk[walk.index(node):]
            first = cycle.index(min(cycle))
            cycles.append(cycle[first:] + cycle[:first])
        for seen in walk:
            state[seen] = 2
    return cycles


class Linked:
    """The images a pass gave a parent link, while they are few; past ``_WALKED_MAX`` only
    that they were many (a new index links them all, and its every edge is loaded anyway:
    100,000 IDs kept here would only add to its peak memory)."""

    def __init__(self) -> None:
        self.ids: set[str] | None = set()

    def add(self, ids: Iterable[str]) -> None:
        if self.ids is not None:
            self.ids.update(ids)
            if len(self.ids) > _WALKED_MAX:
                self.ids = None

    def __bool__(self) -> bool:
        return self.ids is None or bool(self.ids)


def break_cycles(p: Pass, linked: Linked) -> None:
    """Leave out one edge of every parent cycle; ``linked``: the images this pass gave a
    parent link.

    The last pass left no cycle but the edges it left out, which are put back here: a cycle
    now goes through one of those or a link made this pass, so only the parent chains
    above those images are walked, not every edge of the index."""
    ignored = p.problems.old_of_kind(METADATA, ProblemKind.PARENT_CYCLE)
    if not linked and not ignored:
        return
    restored = _restore(p, ignored)
    if linked.ids is None:
        edges = dict(p.tx.parent_edges())
    else:
        edges = _walked(p, linked.ids | set(restored))
    for cycle in find_cycles(edges):
        child = cycle[0]
        p.tx.set_parent(child, None)
        p.problems.note([Problem(
            METADATA + child[len(PREFIX):], ProblemKind.PARENT_CYCLE,
            f"parent {edges[child]} leads back to this image through {len(cycle)} image(s): "
            f"the link is ignored")])


def _walked(p: Pass, starts: set[str]) -> dict[str, str]:
    """The parent links above these images (child -> parent), a level at a time; every
    edge of the index once the walk grows long or wide (a chain of thousands of images is
    cheaper loaded whole)."""
    edges: dict[str, str] = {}
    level = starts
    seen = set(starts)
    for _ in range(_LEVELS):
        if not level:
            return edges
        if len(seen) > _WALKED_MAX:
            break
        found = p.tx.parents_of(level)
        edges.update(found)
        level = set(found.values()) - seen
        seen |= level
    return dict(p.tx.parent_edges())


# Past these, the walk loads every edge instead.
_LEVELS = 64
_WALKED_MAX = 20_000


def _restore(p: Pass, paths: Iterable[str]) -> list[str]:
    """Put back the links earlier passes left out, as the disk has them now; the images
    given one."""
    restored = []
    for path in paths:
        p.problems.clear([path])
        name = path[len(METADATA):]
        if not p.tx.has_image(PREFIX + name):
            continue
        meta, _ = read_metadata(p.root.base, name)
        if meta.parent is not None:
            p.tx.set_parent(PREFIX + name, meta.parent)
            restored.append(PREFIX + name)
    return restored


__all__ = ["Linked", "break_cycles", "find_cycles"]
