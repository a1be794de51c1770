"""The sync: reading an image root into its index, incrementally.

Data flows one way, root -> sync -> index: ``scan`` lists and signs entries, ``changes``
compares them with the signatures the index keeps, ``read`` turns changed entries into rows
(in ``workers`` when the pass is large), ``layers`` and ``images`` write them, ``leftovers``
records what interrupted writes left, and ``restore`` runs the whole pass.
"""

from __future__ import annotations

from imagestore.sync.changes import record
from imagestore.sync.problems import Problem, ProblemKind, recorded
from imagestore.sync.report import Progress, SyncReport
from imagestore.sync.restore import reread, run

__all__ = ["Problem", "ProblemKind", "Progress", "SyncReport", "record", "recorded", "reread",
           "run"]
