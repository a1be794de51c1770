"""Layer chains resolved the way moby's layer store loads them: a layer loads only if its
parent does, and its chain's size is its own plus its parent chain's."""

from __future__ import annotations

from imagestore.moby.root import LAYERS
from imagestore.sync.compact import Link, chain_id, stacked
from imagestore.sync.problems import Problem, ProblemKind


def resolve(links: dict[bytes, Link], known: dict[bytes, int] | None = None
            ) -> tuple[dict[bytes, int], list[Problem]]:
    """The chains moby would load, each with its whole size and depth packed (``stacked``);
    and a problem for each chain that does not load because its parent does not.

    ``known``: chains outside ``links`` that load, packed, which a chain of ``links`` may
    stand on (a sync that read a few layers passes their stored parents, not every layer
    of the index); they are not in the answer."""
    out: dict[bytes, int] = dict(known) if known else {}
    failed: set[bytes] = set()
    problems: list[Problem] = []
    for start in links:
        stack: list[bytes] = []
        on_stack: set[bytes] = set()  # a cycle check that stays linear in a deep chain
        cid: bytes | None = start
        while cid is not None and cid not in out and cid not in failed:
            if cid in on_stack or cid not in links:
                break
            stack.append(cid)
            on_stack.add(cid)
            cid = links[cid].parent
        ok = cid is None or cid in out
        for c in reversed(stack):
            link = links[c]
            if ok:
                out[c] = stacked(0 if link.parent is None else out[link.parent], link.diff_size)
            else:
                failed.add(c)
                parent = None if link.parent is None else chain_id(link.parent)
                problems.append(Problem(
                    LAYERS + c.hex(), ProblemKind.BAD_LAYER,
                    f"layer not loaded: parent {parent} cannot be loaded"))
    if known:
        for chain in known:
            if chain not in links:
                del out[chain]
    return out, problems


__all__ = ["resolve"]
