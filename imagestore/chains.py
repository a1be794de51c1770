"""Layer chains as a sync holds them while it reads a layer store: keyed by their raw 32-byte
digests (tens of MB less than ``sha256:`` strings at 100,000 images), and resolved the way
moby's layer store loads them, a layer only if its parent loads."""

from __future__ import annotations

from imagestore.digest import PREFIX
from imagestore.entries import LAYERS
from imagestore.ingest import Problem

# A layer's parent chain, own size, and its packed IDs when read this pass (else b"").
Link = tuple[bytes | None, int, bytes]
# A chain's size and depth packed in one int, size * DEPTHS + depth: one int, not a tuple,
# for each of 100,000s of chains.
_DEPTH_BITS = 32
DEPTHS = 1 << _DEPTH_BITS
_DEPTH_MASK = DEPTHS - 1


def key(chain: str, pool: dict[bytes, bytes]) -> bytes:
    """A chain ID (bare hex or ``sha256:``) as its raw digest, one object per chain in
    ``pool`` (a parent and its children share it); ``ValueError`` when it is not hex."""
    raw = bytes.fromhex(chain[len(PREFIX):] if chain.startswith(PREFIX) else chain)
    return pool.setdefault(raw, raw)


def digest(chain: str) -> bytes:
    """A ``sha256:`` chain ID's raw digest; ``b""`` for anything else."""
    try:
        return bytes.fromhex(chain[len(PREFIX):])
    except ValueError:
        return b""


def split(packed: int) -> tuple[int, int]:
    """(size, depth) of a packed chain (as ``divmod`` would, a negative size included)."""
    return packed >> _DEPTH_BITS, packed & _DEPTH_MASK


def resolve(links: dict[bytes, Link]) -> tuple[dict[bytes, int], list[Problem]]:
    """The chains moby would load, each with its whole size and depth packed; and a problem
    for each chain that does not load because its parent does not."""
    out: dict[bytes, int] = {}
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
            cid = links[cid][0]
        ok = cid is None or cid in out
        for c in reversed(stack):
            parent, diff_size, _ = links[c]
            if ok:
                below = 0 if parent is None else out[parent]
                out[c] = below + diff_size * DEPTHS + 1
            else:
                failed.add(c)
                problems.append(Problem(
                    LAYERS + c.hex(), "bad-layer",
                    f"layer not loaded: parent {PREFIX}{parent and parent.hex()} cannot be loaded"))
    return out, problems


__all__ = ["DEPTHS", "Link", "digest", "key", "resolve", "split"]
