"""Compact forms a sync keeps 100,000s of, or sends back from its workers: each is built and
taken apart here only, by name.

- A whole scan, packed into a few large objects (small ones that outlive the layers' chains
  would pin the heap those leave).
- A layer's diff ID and cache ID in one bytes object.
- A layer chain keyed by its raw 32-byte digest, with its size and depth in one int.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

from imagestore.moby.digest import PREFIX, is_hex64
from imagestore.sync.problems import Problem

# -- a whole scan -----------------------------------------------------------------------------
# Names that are 64 hex digits as 32 raw bytes each (zero bytes in place of the others, kept
# by position), signatures, the buckets' keys (one string), digests and sizes, then names
# that are not text and names that hold no entry.
PackedScan = tuple[bytes, dict[int, str], "array[int]", str, "array[int]", "array[int]",
                   list[str], list[str]]
_ODD_NAME = bytes(32)
# What a packed scan unpacks to: names, signatures, bucket digests, not text, others.
ScanParts = tuple[list[str], list[int], dict[str, tuple[int, int]], list[str], list[str]]


def pack_scan(kept: list[str], sigs: list[int], buckets: dict[str, tuple[int, int]],
              not_text: list[str], others: list[str]) -> PackedScan:
    packed = all_hex64(kept)
    if packed is not None:  # every name hex, as dockerd leaves it: packed at once
        odd: dict[int, str] = {}
        raw = packed
    else:
        odd = {i: n for i, n in enumerate(kept) if not is_hex64(n)}
        raw = b"".join(_ODD_NAME if i in odd else bytes.fromhex(n) for i, n in enumerate(kept))
    return (raw, odd, array("q", sigs), "\0".join(buckets),
            array("q", [d for d, _ in buckets.values()]),
            array("q", [n for _, n in buckets.values()]), not_text, others)


def all_hex64(names: list[str]) -> bytes | None:
    """The names' raw bytes, when every one is 64 lowercase hex digits (``is_hex64``), told
    in a few passes in C over all of them at once; else ``None``."""
    if set(map(len, names)) - {64}:
        return None
    joined = "".join(names)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    return raw if raw.hex() == joined else None  # no upper case, no white space


def unpack_scan(packed: PackedScan) -> ScanParts:
    raw, odd, sigs, keys, sums, sizes, not_text, others = packed
    kept: list[str] = []
    step = 32 * 4096  # a piece at a time: no second copy of every name at once
    for start in range(0, len(raw), step):
        text = raw[start : start + step].hex()
        kept.extend(text[i : i + 64] for i in range(0, len(text), 64))
    del raw
    for i, name in odd.items():
        kept[i] = name
    buckets = dict(zip(keys.split("\0"), zip(sums, sizes, strict=True), strict=True)) \
        if keys else {}
    return kept, list(sigs), buckets, not_text, others


# -- a layer's IDs ----------------------------------------------------------------------------
def pack_ids(diff_id: str, cache_id: str) -> bytes:
    """A layer's diff ID (a checked ``sha256:`` digest) and cache ID: 32 raw bytes each when
    the cache ID is hex, as every graph driver writes it (97 bytes instead of some 250 for
    two strings)."""
    diff = bytes.fromhex(diff_id[len(PREFIX):])
    if is_hex64(cache_id):
        return b"x" + diff + bytes.fromhex(cache_id)
    return b"t" + diff + cache_id.encode("utf-8", "surrogatepass")


def unpack_ids(packed: bytes) -> tuple[str, str]:
    """(diff ID, cache ID) of ``pack_ids``."""
    diff_id = PREFIX + packed[1:33].hex()
    if packed[:1] == b"x":
        return diff_id, packed[33:].hex()
    return diff_id, packed[33:].decode("utf-8", "surrogatepass")


# -- layer chains -----------------------------------------------------------------------------
class Link(NamedTuple):
    """A layer as chain resolution needs it: its parent chain, its own size, and its packed
    IDs when its folder was read this pass (``b""`` when its row is already stored)."""

    parent: bytes | None
    diff_size: int
    ids: bytes


class LayerCheck(NamedTuple):
    """A layer folder as a worker checked it: a ``Link``'s fields, or the problem."""

    parent: bytes | None
    diff_size: int
    ids: bytes
    problem: Problem | None


_DEPTH_BITS = 32
_DEPTH_MASK = (1 << _DEPTH_BITS) - 1


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


def chain_id(raw: bytes) -> str:
    return PREFIX + raw.hex()


def stacked(below: int, diff_size: int) -> int:
    """The packed size and depth of a layer on top of the packed chain ``below`` (0: none):
    one int, not a tuple, for each of 100,000s of chains."""
    return below + (diff_size << _DEPTH_BITS) + 1


def packed(size: int, depth: int) -> int:
    """A stored chain's size and depth as ``stacked`` packs them."""
    return (size << _DEPTH_BITS) + depth


def split(packed: int) -> tuple[int, int]:
    """(size, depth) of a packed chain (as ``divmod`` would, a negative size included)."""
    return packed >> _DEPTH_BITS, packed & _DEPTH_MASK


__all__ = ["LayerCheck", "Link", "PackedScan", "ScanParts", "all_hex64", "chain_id", "digest",
           "key", "pack_ids", "pack_scan", "packed", "split", "stacked", "unpack_ids",
           "unpack_scan"]
