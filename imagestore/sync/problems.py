"""What is wrong with a store, in one vocabulary: every kind of problem a sync records or
fsck reports is a ``ProblemKind``, whose value is the name users see (``sync_problems.kind``,
``sync --json``, ``fsck``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING

from imagestore.index.queries import Reader

if TYPE_CHECKING:
    from imagestore.index import Writer


class ProblemKind(str, Enum):
    """A kind of problem, with what fsck suggests doing about it."""

    # Entries a sync skips (moby logs these and carries on).
    BAD_NAME = "bad-name"  # a file name that is not UTF-8
    INVALID_NAME = "invalid-name"  # a content file not named by 64 lowercase hex digits
    TEMP_FILE = "temp-file"  # left by an interrupted write (or delete)
    UNREADABLE = "unreadable"
    DIGEST_MISMATCH = "digest-mismatch"  # content that does not hash to its name
    INVALID_CONFIG = "invalid-config"
    MISSING_LAYER = "missing-layer"  # an image whose top layer does not load
    BAD_METADATA = "bad-metadata"
    BAD_PARENT = "bad-parent"  # a ``parent`` file that does not hold an image ID
    PARENT_CYCLE = "parent-cycle"  # a parent link that leads back to its image: ignored
    BAD_LAYER = "bad-layer"
    BAD_MOUNT = "bad-mount"
    BAD_REFERENCES = "bad-references"  # ``repositories.json`` cannot be read at all
    BAD_REFERENCE = "bad-reference"  # one entry of it
    # What only fsck finds.
    ORPHAN_METADATA = "orphan-metadata"  # metadata of an image with no content
    INDEX = "index"  # the index disagrees with the disk
    PARENT = "parent"  # a parent link names an image that is not in the store
    LAYER_CHAIN = "layer-chain"  # an image's layer chain is missing or inconsistent
    UNREFERENCED_LAYER = "unreferenced-layer"
    DANGLING_TAG = "dangling-tag"  # a reference to an image that is not in the store

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # as the plain string's: a kind and its name are one key
        return str.__hash__(self)

    @property
    def action(self) -> str:
        """What fsck suggests."""
        return _ACTIONS.get(self, "fix or remove the entry; it is skipped")

    @property
    def repairable(self) -> bool:
        """``fsck --repair`` removes the entry (nothing else is ever removed)."""
        return self in (ProblemKind.TEMP_FILE, ProblemKind.ORPHAN_METADATA,
                        ProblemKind.DANGLING_TAG)


_ACTIONS = {
    ProblemKind.TEMP_FILE: "remove it (fsck --repair)",
    ProblemKind.INVALID_NAME: "inspect and remove it by hand",
    ProblemKind.UNREADABLE: "inspect it by hand",
    ProblemKind.DIGEST_MISMATCH: "restore it from a backup, or remove the image",
    ProblemKind.ORPHAN_METADATA: "remove it (fsck --repair)",
    ProblemKind.INDEX: "resync the index (fsck --repair)",
    ProblemKind.PARENT: "set another parent, or ignore (docker does)",
    ProblemKind.PARENT_CYCLE: "set another parent (imagestore set-parent) or remove the file",
    ProblemKind.LAYER_CHAIN: "re-pull or rebuild the image",
    ProblemKind.UNREFERENCED_LAYER: "docker keeps it until the next layer GC; remove by hand "
                                    "if unwanted",
    ProblemKind.DANGLING_TAG: "remove the tag (fsck --repair)",
}


@dataclass(frozen=True)
class Problem:
    """A store entry that was skipped (or an fsck finding), and why."""

    path: str
    kind: ProblemKind
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def kind_of(value: str) -> ProblemKind | str:
    """A stored kind as the enum (a kind written by another version stays a string)."""
    try:
        return ProblemKind(value)
    except ValueError:
        return value


def recorded(reader: Reader) -> list[Problem]:
    """Every problem the index holds, by path."""
    return [Problem(path, kind_of(kind), reason)  # type: ignore[arg-type]
            for path, kind, reason in reader.problems()]


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Problems:
    """One pass's bookkeeping: the problems recorded before it, those it has found, and the
    old ones that no longer apply because their entry is being read again."""

    def __init__(self, tx: Writer) -> None:
        self.found: dict[str, Problem] = {}
        self.old: dict[str, str] = tx.problem_kinds()
        self.cleared: set[str] = set()

    def note(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.found[p.path] = p

    def clear(self, paths: Iterable[str]) -> None:
        """Forget the old problems of these entries (they are being read again)."""
        if self.old:
            self.cleared.update(p for p in paths if p in self.old)

    def old_paths(self, kind: str) -> set[str]:
        """Paths of the old problems under one entry kind."""
        return {p for p in self.old if p.startswith(kind)}

    def old_of_kind(self, kind: str, problem: ProblemKind) -> list[str]:
        return [p for p, k in self.old.items() if k == problem.value and p.startswith(kind)]

    def get(self, path: str) -> Problem | None:
        return self.found.get(path)

    def save(self, tx: Writer) -> None:
        tx.delete_problems((self.cleared | self.found.keys()) & self.old.keys())
        found = now_text()
        tx.insert_problems([(p.path, p.kind.value, p.reason, found)
                            for p in self.found.values()])


__all__ = ["Problem", "ProblemKind", "Problems", "kind_of", "recorded"]
