"""Leftovers of interrupted writes: temp files of moby's atomic writer and ``-removing``
layer folders of a delete. A tidying pass (under the writers' lock, no dockerd running)
removes them; any other pass records them as problems."""

from __future__ import annotations

import os
from collections.abc import Sequence

from imagestore.moby.digest import printable
from imagestore.moby.files import TEMP_PREFIX
from imagestore.moby.root import CONTENT, METADATA, Root
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.signatures import entry_signature
from imagestore.sync.state import Pass
from imagestore.sync.workers import chunked_map


def removing_folders(root: Root, others: Sequence[str]) -> None:
    """Remove the ``-removing`` folders a layer listing found (moby cleans them at start)."""
    if any(n.endswith("-removing") for n in others):
        root.layerdb.remove_leftovers()


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


def leftovers(p: Pass, kind: str, changed: set[str], current: dict[str, int]) -> set[str]:
    """Temp files of interrupted writes among a kind's entries: removed when tidying, else
    recorded as problems (and removed by a later tidy pass). Creating one moved its folder's
    signature, so only changed entries and earlier finds are looked at: an unchanged root
    costs nothing here. Returns the entries whose signature tidying removed or changed."""
    imagedb = p.root.imagedb
    tidied: set[str] = set()
    if kind == CONTENT and p.tidy:
        seen = {path[len(CONTENT):] for path in p.problems.old_paths(CONTENT)}
        for name in [n for n in (changed | seen) & current.keys()
                     if imagedb.remove_temp_file(n)]:
            changed.discard(name)
            del current[name]
            tidied.add(name)
    elif kind == METADATA:
        nested: dict[str, list[str]] = {}  # earlier temp-file finds, by folder
        for path in p.problems.old_paths(METADATA):
            folder, slash, _ = path[len(METADATA):].partition("/")
            if slash:
                nested.setdefault(folder, []).append(path)
        folders = sorted((changed | nested.keys()) & current.keys())
        start = 0
        for found in chunked_map(metadata_temp_files, p.root.base, folders):
            for name, temps in zip(folders[start : start + len(found)], found, strict=True):
                p.problems.clear(nested.get(name, ()))
                if not temps:
                    continue
                if p.tidy:
                    imagedb.remove_metadata_temp_files(name)
                    current[name] = entry_signature(p.root, kind, name) or current[name]
                    changed.add(name)
                    tidied.add(name)
                else:
                    p.problems.note(Problem(f"{METADATA}{name}/{t}", ProblemKind.TEMP_FILE,
                                            "temporary file left by an interrupted write")
                                    for t in temps)
            start += len(found)
    return tidied


__all__ = ["leftovers", "metadata_temp_files", "removing_folders"]
