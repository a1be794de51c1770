"""Digests, image IDs and chain IDs: the few string rules everything else relies on.

Everything that turns user input into a path or an SQL bound goes through here first, so a
hostile string never reaches the file system or a pattern.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ALGORITHM = "sha256"
PREFIX = "sha256:"
HEX_LEN = 64

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]*")


def digest_of(data: bytes) -> str:
    """The image ID of config bytes, exactly as moby computes it (no canonicalisation)."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def is_text(name: str) -> bool:
    """Whether a file name from ``os.listdir`` is UTF-8 (the others hold surrogates that no
    database column or terminal takes)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 are written ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_hex64(name: str) -> bool:
    """Names moby's ``Walk`` accepts in ``content/sha256`` (NEW rule: 64 lowercase hex)."""
    return len(name) == HEX_LEN and _HEX64.fullmatch(name) is not None


def is_image_id(value: str) -> bool:
    return value.startswith(PREFIX) and is_hex64(value[len(PREFIX) :])


def truncate_id(image_id: str) -> str:
    """moby's ``stringid.TruncateID``: the first 12 characters after any algorithm prefix."""
    return image_id.partition(":")[2][:12] if ":" in image_id else image_id[:12]


def hex_of(image_id: str) -> str:
    """The 64-hex part of a full ID; raises ``ValueError`` for anything else."""
    if not is_image_id(image_id):
        raise ValueError(f"not a full image ID: {image_id!r}")
    return image_id[len(PREFIX) :]


def normalize_id(value: str) -> str | None:
    """A full ID from ``sha256:<hex>`` or a bare 64-hex string, else ``None``."""
    if is_image_id(value):
        return value
    if is_hex64(value):
        return PREFIX + value
    return None


def chain_id(diff_ids: list[str]) -> str | None:
    """moby's ``identity.ChainID``; ``None`` where moby returns ``""`` (no layers).

    A single diff ID is returned unchanged and unvalidated, as moby does.
    """
    current: str | None = None
    for diff in diff_ids:
        if current is None:
            current = diff
        else:
            current = PREFIX + hashlib.sha256(f"{current} {diff}".encode()).hexdigest()
    return current


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids``, bottom first."""
    return [c for c in (chain_id(diff_ids[: i + 1]) for i in range(len(diff_ids))) if c]


@dataclass(frozen=True)
class SearchTerm:
    """A parsed search term: the hex prefix to look for, and whether it can match at all.

    Follows go-digest's ``Set.Lookup``: ``alg:hex`` splits at the first colon; a term with no
    colon, a leading colon or nothing after it is taken verbatim as a hex prefix. Only sha256
    digests live in the store, so another algorithm, upper case or any non-hex character means
    no image can match, and such input never reaches SQL.
    """

    hex_prefix: str
    possible: bool


def parse_search_term(term: str) -> SearchTerm:
    alg, sep, rest = term.partition(":")
    if sep and alg and rest:
        if alg != ALGORITHM:
            return SearchTerm("", False)
        candidate = rest
    else:
        candidate = term
    ok = len(candidate) <= HEX_LEN and _HEX.fullmatch(candidate) is not None
    return SearchTerm(candidate if ok else "", ok)


def prefix_upper_bound(hex_prefix: str) -> str:
    """Exclusive upper bound of the range holding every ID that starts with the prefix.

    ``g`` sorts after every hex digit, so ``[p, p + "g")`` is exactly the IDs starting with p;
    SQLite answers that range from the primary-key index.
    """
    return PREFIX + hex_prefix + "g"
