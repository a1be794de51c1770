"""What is wrong with a store, in one vocabulary: every kind of problem a sync records,
fsck reports or the graph driver's check finds is a ``ProblemKind``, whose value is the name
users see (``sync_problems.kind``, ``sync --json``, ``fsck``)."""

from __future__ import annotations

from enum import Enum


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
    # The graph driver's folders, and the layers' data in them.
    ORPHAN_DRIVER_DATA = "orphan-driver-data"  # nothing uses it: removable
    UNCLAIMED_DRIVER_DATA = "unclaimed-driver-data"  # no layer or container uses it; BuildKit may
    DANGLING_DRIVER_LINK = "dangling-driver-link"  # overlay2/l/<name> leading to no layer
    MISSING_DRIVER_DATA = "missing-driver-data"  # a layer's or container's folder is gone
    UNFINISHED_REMOVAL = "unfinished-removal"  # <chain>-<random>-removing, the driver's tmp/
    LAYER_DATA = "layer-data"  # a layer whose tar cannot be rebuilt byte for byte
    # containerd's store (imagestore.containerd.check): its kinds, under the same names.
    MISSING_BLOB = "missing-blob"  # an image needs it; no file, or no record in the namespace
    BAD_BLOB = "bad-blob"  # a blob path that is not a regular file, or cannot be read
    SIZE_MISMATCH = "size-mismatch"
    BAD_DOCUMENT = "bad-document"  # an index or manifest that does not parse
    BAD_RECORD = "bad-record"  # a meta.db record that cannot be right
    UNREFERENCED_BLOB = "unreferenced-blob"  # containerd's garbage collector would take it
    UNPROTECTED_BLOB = "unprotected-blob"  # an image needs it, yet the collector would take it
    UNREFERENCED_SNAPSHOT = "unreferenced-snapshot"
    INGEST = "ingest"  # an unfinished write of the content store
    BROKEN_SNAPSHOT_CHAIN = "broken-snapshot-chain"
    TORN_READ = "torn-read"  # meta.db could not be read consistently

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
                        ProblemKind.DANGLING_TAG, ProblemKind.ORPHAN_DRIVER_DATA,
                        ProblemKind.DANGLING_DRIVER_LINK, ProblemKind.UNFINISHED_REMOVAL)


_ACTIONS = {
    ProblemKind.MISSING_BLOB: "pull the image again (or remove it with ctr/docker)",
    ProblemKind.BAD_BLOB: "inspect it by hand: containerd's blobs are regular files",
    ProblemKind.SIZE_MISMATCH: "restore it from a backup, or pull the image again",
    ProblemKind.BAD_DOCUMENT: "pull the image again",
    ProblemKind.BAD_RECORD: "remove the record with ctr and pull the image again",
    ProblemKind.UNREFERENCED_BLOB: "containerd's garbage collector removes it at its next run",
    ProblemKind.UNPROTECTED_BLOB: "pull the image again: containerd's collector would take it",
    ProblemKind.UNREFERENCED_SNAPSHOT: "containerd's garbage collector removes it at its next "
                                       "run",
    ProblemKind.INGEST: "containerd aborts it when it expires (ctr content active / rm)",
    ProblemKind.BROKEN_SNAPSHOT_CHAIN: "remove the snapshot with ctr snapshots rm and unpack "
                                       "again",
    ProblemKind.TORN_READ: "run again (containerd was committing), or check a copy of meta.db",
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
    ProblemKind.ORPHAN_DRIVER_DATA: "remove it (fsck --repair)",
    ProblemKind.DANGLING_DRIVER_LINK: "remove the link (fsck --repair)",
    ProblemKind.UNCLAIMED_DRIVER_DATA: "left alone: it may be BuildKit's; make snapshots.db "
                                       "readable to tell",
    ProblemKind.MISSING_DRIVER_DATA: "the layer's files are gone: remove the images that use "
                                     "it, or pull or load them again",
    ProblemKind.UNFINISHED_REMOVAL: "finish the delete: fsck --repair releases its driver data",
    ProblemKind.LAYER_DATA: "the layer cannot be rebuilt exactly (save and push fail): pull or "
                            "load its image again",
}


__all__ = ["ProblemKind"]
