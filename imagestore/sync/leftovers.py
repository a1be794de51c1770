"""Leftovers of interrupted writes (temp files of moby's atomic writer) found by a sync:
recorded as problems, never removed. A temp file looks the same whether its writer crashed or
is writing right now (a dockerd we did not see, another tool), so only ``fsck --repair``, a
person's decision, removes them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from imagestore.moby.digest import printable
from imagestore.moby.files import TEMP_PREFIX
from imagestore.moby.root import METADATA
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.state import Pass
from imagestore.sync.workers import chunked_map


def metadata_temp_files(base: str, names: Sequence[str]) -> list[list[str]]:
    """Temp files an interrupted write left in each named metadata folder; runs in workers."""
    out = []
    for name in names:
        try:
            found = os.listdir(f"{base}/{METADATA}{name}")
        except (FileNotFoundError, NotADirectoryError):
            found = []
        out.append([printable(n) for n in found if n.startswith(TEMP_PREFIX)])
    return out


def note_metadata_temp_files(p: Pass, changed: set[str], present: AbstractSet[str]) -> None:
    """Record the temp files in changed metadata folders (content temp files are recorded
    when they are read). Creating one moved its folder's signature, so only changed folders
    and earlier finds are looked at: an unchanged root costs nothing here."""
    nested: dict[str, list[str]] = {}  # earlier temp-file finds, by folder
    for path in p.problems.old_paths(METADATA):
        folder, slash, _ = path[len(METADATA):].partition("/")
        if slash:
            nested.setdefault(folder, []).append(path)
    folders = sorted((changed | nested.keys()) & present)
    start = 0
    for found in chunked_map(metadata_temp_files, p.root.base, folders):
        for name, temps in zip(folders[start : start + len(found)], found, strict=True):
            p.problems.clear(nested.get(name, ()))
            p.problems.note(Problem(f"{METADATA}{name}/{t}", ProblemKind.TEMP_FILE,
                                    "temporary file left by an interrupted write")
                            for t in temps)
        start += len(found)


__all__ = ["metadata_temp_files", "note_metadata_temp_files"]
