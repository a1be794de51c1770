"""A process killed (SIGKILL) at any moment leaves a store whose next sync gives exactly what a
rebuild gives, and whose leftovers fsck reports and ``fsck --repair`` removes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from snapshot import rebuilt, snapshot

import imagestore

WORKER = Path(__file__).parent / "workers.py"


def test_random_kills_are_repaired_by_the_next_open(real_root: Path, index: Path,
                                                    tmp_path: Path) -> None:
    imagestore.open(real_root, index).close()
    rng = random.Random(1234)
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(real_root), str(index),
                                 str(round_), "-1"], stderr=subprocess.DEVNULL)
        time.sleep(0.4 + rng.random() * 0.8)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with imagestore.open(real_root, index) as store:
            assert snapshot(store) == rebuilt(real_root, tmp_path), f"round {round_}"
            content = real_root / "imagedb/content/sha256"
            left = {f"imagedb/content/sha256/{p.name}" for p in content.iterdir()
                    if p.name.startswith(".tmp-")}
            left |= {f"layerdb/sha256/{p.name}"
                     for p in (real_root / "layerdb/sha256").glob("*-removing")}
            findings = store.check()
            assert left <= {f.path for f in findings if f.check == "temp-file"}
            store.repair(findings)
            assert not any((real_root / path).exists() for path in left)
            on_disk = {"sha256:" + p.name for p in content.iterdir()}
            # A create whose layers another operation released leaves its content file (as
            # moby's Create does): it is skipped with a problem, and nothing else is missing.
            assert store.last_sync is not None
            skipped = {"sha256:" + p.path.rsplit("/", 1)[1]: p.kind
                       for p in store.last_sync.problems if p.path.startswith(
                           "imagedb/content/")}
            assert set(store.map()) == on_disk - set(skipped)
            assert set(skipped.values()) <= {"missing-layer"}
