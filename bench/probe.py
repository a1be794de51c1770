"""One measurement in a fresh process, so time and peak RSS belong to that operation alone.

usage: python -m bench.probe {open|sync} ROOT INDEX   ->  prints {"seconds": s, "rss_mb": m}
"""

from __future__ import annotations

import json
import resource
import sys
import time

import imagestore


def main() -> None:
    what, root, index = sys.argv[1:4]
    start = time.perf_counter()
    if what == "open":  # open = migrate check + incremental sync (cold when the index is new)
        store = imagestore.open(root, index, readonly=True)
    else:
        raise SystemExit(f"unknown probe {what!r}")
    seconds = time.perf_counter() - start
    count = len(store)
    store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "images": count}))


if __name__ == "__main__":
    main()
