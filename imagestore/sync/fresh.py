"""Whether a sync would find nothing to do, told from the same signatures the sync compares
but read through any ``Reader`` (a bare ``sqlite3`` one included): a warm open that finds
nothing changed answers without a write transaction, and a warm command line without
SQLAlchemy. Conservative by construction: whatever it cannot vouch for counts as a change,
and the real sync decides."""

from __future__ import annotations

import time

from imagestore.index.queries import Reader
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root
from imagestore.sync.problems import recorded
from imagestore.sync.report import SyncReport
from imagestore.sync.scan import scan
from imagestore.sync.signatures import SCHEME, folder_signature

# Kinds whose entries are only ever renamed into place or removed: their folder signs them.
FOLDER_SIGNED = (LAYERS, CONTENT)
# Kinds whose entries are signed one by one at every sync.
ENTRY_SIGNED = (METADATA, MOUNTS, REPOSITORIES)
SCHEME_KEY = "signature-scheme"


def folder_key(kind: str) -> str:
    """The setting that keeps a folder-signed kind's folder signature."""
    return "folder-signature:" + kind


def unchanged(root: Root, q: Reader) -> bool:
    """True when a sync of ``root`` would read and write nothing.

    A sync looks again at every entry with a recorded problem, except in a folder-signed kind
    whose folder has not moved: any other problem is a change here. A folder changed within
    the last moment is not trusted yet (``folder_signature`` gives ``None``), nor is an index
    signed another way."""
    if q.setting(SCHEME_KEY) != SCHEME:
        return False
    if any(not path.startswith(FOLDER_SIGNED) for path, _, _ in q.problems()):
        return False
    now = time.time_ns()
    for kind in FOLDER_SIGNED:
        sig = folder_signature(root, kind, now)
        if sig is None or q.setting(folder_key(kind)) != str(sig):
            return False
    # One file, a few mounts, then a folder per image: a change is told at its cheapest.
    return all(scan(root, kind).digests == q.digests(kind)
               for kind in (REPOSITORIES, MOUNTS, METADATA))


def quiet_report(q: Reader) -> SyncReport:
    """The report a sync that found nothing to do gives: every image unchanged, the problems
    the index holds, the kinds whose entries it signed one by one."""
    problems = recorded(q)
    return SyncReport(unchanged=q.count_images(), problems=problems,
                      skipped=sum(1 for p in problems if p.path.startswith(CONTENT)),
                      listed=list(ENTRY_SIGNED))


__all__ = ["ENTRY_SIGNED", "FOLDER_SIGNED", "SCHEME_KEY", "folder_key", "quiet_report",
           "unchanged"]
