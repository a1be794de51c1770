"""Many processes, one root and one index: writers queue, readers never fail, and at the end
the index equals the disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from snapshot import rebuilt, snapshot

import imagestore

WORKER = Path(__file__).parent / "workers.py"


def test_four_writers_at_once_leave_a_true_index(real_root: Path, index: Path,
                                                 tmp_path: Path) -> None:
    imagestore.open(real_root, index).close()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(real_root), str(index),
                               str(seed), "40"], stderr=subprocess.PIPE, text=True)
             for seed in range(5)]
    errors = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in errors), errors
    assert not any("locked" in err for _, err in errors)
    with imagestore.open(real_root, index) as store:
        report = store.sync()
        assert report.added == report.removed == report.changed == 0  # nothing was missed
        assert snapshot(store) == rebuilt(real_root, tmp_path)
        on_disk = {"sha256:" + p.name for p in (real_root / "imagedb/content/sha256").iterdir()}
        # A create whose layers another worker released leaves its content file (as moby's
        # Create does): it is on disk, skipped with a problem, and nothing else is missing.
        skipped = {"sha256:" + p.path.rsplit("/", 1)[1]: p.kind for p in report.problems}
        assert set(store.map()) == on_disk - set(skipped)
        assert set(skipped.values()) <= {"missing-layer"}


def test_readers_run_while_a_writer_works(real_root: Path, index: Path) -> None:
    imagestore.open(real_root, index).close()
    writer = subprocess.Popen([sys.executable, str(WORKER), str(real_root), str(index), "7",
                               "60"], stderr=subprocess.PIPE, text=True)
    try:
        with imagestore.open(real_root, index, readonly=True, sync=False) as reader:
            while writer.poll() is None:
                assert all(i.startswith("sha256:") for i in reader.heads())
                assert len(reader.map()) >= 1
    finally:
        code = writer.wait(timeout=300)
    assert code == 0, writer.stderr.read() if writer.stderr else ""
