"""The benchmarks' own sections of ``docs/benchmarks.md``, each between its markers: a run
replaces its section and leaves the others as they are."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def write_section(begin: str, end: str, heading: str, text: str,
                  path: Path = DOCS / "benchmarks.md") -> None:
    """Put ``text`` between ``begin`` and ``end`` in ``path`` (a new section under
    ``heading`` at the end when the markers are not there yet)."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(doc)


__all__ = ["DOCS", "write_section"]
