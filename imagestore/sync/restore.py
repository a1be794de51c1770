"""The restore pass, made incremental: bring the index in line with the root.

moby's restore re-reads and re-hashes every config at every start. Here each entry's
signature is kept in the index and only entries whose signature moved are read again; the
result is the same index a full rebuild would give. Broken entries are skipped and recorded
as problems, exactly where moby logs and skips them.
"""

from __future__ import annotations

from collections.abc import Iterable

from imagestore.index import Writer
from imagestore.index.rows import TagEntry
from imagestore.moby.digest import PREFIX
from imagestore.moby.files import MAX_FILE_SIZE, read_optional
from imagestore.moby.references import BadReferences, parse_repositories
from imagestore.moby.root import CONTENT, METADATA, REPOSITORIES, Root
from imagestore.sync.changes import Changes, record
from imagestore.sync.cycles import break_cycles
from imagestore.sync.images import reread_one, sync_images
from imagestore.sync.layers import LoadableLayers, sync_layers
from imagestore.sync.problems import Problem, ProblemKind, recorded
from imagestore.sync.report import Progress, SyncReport
from imagestore.sync.state import Pass
from imagestore.sync.workers import shared_workers


def run(tx: Writer, root: Root, *, full: bool = False, progress: Progress | None = None
        ) -> SyncReport:
    """Sync the index (inside the caller's write transaction ``tx``) with ``root``.

    ``full``: forget what the index knows and read everything; ``progress(phase, done,
    total)`` is told as layers and images are read. Nothing under the root is changed:
    leftovers of interrupted writes are recorded as problems (``fsck --repair`` removes
    them)."""
    if full:
        tx.clear()
    p = Pass.start(tx, root, full=full, progress=progress)
    changes = Changes(p)
    loadable = LoadableLayers(p)
    with shared_workers():
        changes.start_early()
        layers = sync_layers(p, changes, loadable)
        linked = sync_images(p, changes, loadable, layers)
    report = p.report
    break_cycles(p, linked)
    _sync_tags(p, changes)
    changes.finish()
    p.problems.save(tx)
    report.problems = recorded(tx)
    report.skipped = sum(1 for x in report.problems if x.path.startswith(CONTENT))
    tx.synced(full or bool(report.added or report.removed or report.changed))
    return report


def reread(tx: Writer, root: Root, image_ids: Iterable[str]) -> dict[str, Problem | None]:
    """Load these images from disk again, now (after a write of their files); for each, the
    problem that keeps it out of the index, or ``None``. Their entries' signatures are
    recorded, so the next sync does not read them once more."""
    p = Pass.start(tx, root)
    loadable = LoadableLayers(p)
    out = {image_id: reread_one(p, loadable, image_id) for image_id in image_ids}
    p.problems.save(tx)
    record(tx, root, [kind + i[len(PREFIX):] for i in out for kind in (CONTENT, METADATA)])
    return out


def reread_tags(tx: Writer, root: Root) -> None:
    """Load ``repositories.json`` again, now (after the store rewrote it), and record its
    signature, so the next sync does not read it once more."""
    p = Pass.start(tx, root)
    _load_tags(p)
    p.problems.save(tx)
    record(tx, root, [REPOSITORIES])


def _sync_tags(p: Pass, changes: Changes) -> None:
    changed, removed, _ = changes.diff(REPOSITORIES)
    if changed or removed:
        _load_tags(p)


def _load_tags(p: Pass) -> None:
    p.problems.clear(p.problems.old_paths(REPOSITORIES))
    p.report.read[REPOSITORIES] += 1
    rows: list[TagEntry] = []
    try:
        raw = read_optional(p.root.repositories, limit=MAX_FILE_SIZE)
        refs, bad = parse_repositories(raw) if raw is not None else ([], [])
    except OSError as exc:
        p.problems.note([Problem(REPOSITORIES, ProblemKind.BAD_REFERENCES,
                                 f"unreadable: {exc.strerror or exc}")])
    except BadReferences as exc:
        p.problems.note([Problem(REPOSITORIES, ProblemKind.BAD_REFERENCES,
                                 f"tags not loaded: {exc}")])
    else:
        p.problems.note(Problem(f"{REPOSITORIES}#{i}", ProblemKind.BAD_REFERENCE, reason)
                        for i, reason in enumerate(bad))
        rows = [(r.ref, r.repository, r.tag, r.digest, r.image_id, r.misfiled) for r in refs]
    p.tx.replace_tags(rows)


__all__ = ["reread", "reread_tags", "run"]
