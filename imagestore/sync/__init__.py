"""The sync: reading an image root into its index, incrementally.

Data flows one way, root -> sync -> index: ``scan`` lists and signs entries, ``changes``
compares them with the signatures the index keeps, ``read`` turns changed entries into rows
(in ``workers`` when the pass is large), ``layers`` and ``images`` write them, ``leftovers``
records what interrupted writes left, ``restore`` runs the whole pass, and ``fresh`` tells,
without SQLAlchemy, that a pass would find nothing to do.

Names are loaded on first use: a warm command line imports ``fresh`` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagestore.lazy import loader

if TYPE_CHECKING:
    from imagestore.sync.changes import record
    from imagestore.sync.problems import Problem, ProblemKind, recorded
    from imagestore.sync.report import Progress, SyncReport
    from imagestore.sync.restore import reread, reread_tags, run

_LAZY = {
    "record": "imagestore.sync.changes", "Problem": "imagestore.sync.problems",
    "ProblemKind": "imagestore.sync.problems", "recorded": "imagestore.sync.problems",
    "Progress": "imagestore.sync.report", "SyncReport": "imagestore.sync.report",
    "reread": "imagestore.sync.restore",
    "reread_tags": "imagestore.sync.restore", "run": "imagestore.sync.restore",
}


__getattr__ = loader(__name__, _LAZY, globals())


__all__ = ["Problem", "ProblemKind", "Progress", "SyncReport", "record", "recorded", "reread",
           "reread_tags", "run"]
