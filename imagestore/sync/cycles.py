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


def break_cycles(p: Pass, changed: bool) -> None:
    """Leave out one edge of every parent cycle; ``changed``: this pass changed images."""
    ignored = p.problems.old_of_kind(METADATA, ProblemKind.PARENT_CYCLE)
    if not changed and not ignored:
        return
    _restore(p, ignored)
    edges = dict(p.tx.parent_edges())
    for cycle in find_cycles(edges):
        child = cycle[0]
        p.tx.set_parent(child, None)
        p.problems.note([Problem(
            METADATA + child[len(PREFIX):], ProblemKind.PARENT_CYCLE,
            f"parent {edges[child]} leads back to this image through {len(cycle)} image(s): "
            f"the link is ignored")])


def _restore(p: Pass, paths: Iterable[str]) -> None:
    """Put back the links earlier passes left out, as the disk has them now."""
    for path in paths:
        p.problems.clear([path])
        name = path[len(METADATA):]
        if not p.tx.has_image(PREFIX + name):
            continue
        meta, _ = read_metadata(p.root.base, name)
        if meta.parent is not None:
            p.tx.set_parent(PREFIX + name, meta.parent)


__all__ = ["break_cycles", "find_cycles"]
