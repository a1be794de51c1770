"""One measurement in a fresh process, so time and peak RSS belong to that operation alone.

usage: python -m bench.probe open ROOT INDEX
prints {"seconds": s, "rss_mb": peak of this process, "worker_rss_mb": peak of its largest
worker process (the parallel readers), "images": n}
"""

from __future__ import annotations

import json
import resource
import sys
import time

# Everything an open may use is imported before the clock starts (``open`` loads the
# engine and the sync on first use).
import sqlalchemy.dialects.sqlite  # noqa: F401

import imagestore.index.database
import imagestore.store
import imagestore.sync.fresh
import imagestore.sync.restore  # noqa: F401
from imagestore.opening import open as open_store


def main() -> None:
    what, root, index = sys.argv[1:4]
    start = time.perf_counter()
    if what == "open":  # open = migrate check + incremental sync (cold when the index is new)
        store = open_store(root, index, readonly=True)
    else:
        raise SystemExit(f"unknown probe {what!r}")
    seconds = time.perf_counter() - start
    count = len(store)
    store.close()
    rss = _peak_rss_mb()
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "worker_rss_mb": workers,
                      "images": count}))


def _peak_rss_mb() -> float:
    """This process's own peak: ``VmHWM`` of its memory since ``exec``. ``ru_maxrss`` would
    also count the benchmark's process as it was when it forked this one (Linux keeps it
    across ``exec``), which is the larger of the two once the benchmark holds a big store's
    map."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
