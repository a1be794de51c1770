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
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "worker_rss_mb": workers,
                      "images": count}))


if __name__ == "__main__":
    main()
