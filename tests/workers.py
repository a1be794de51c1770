"""A separate process that hammers a store, for the concurrency and crash tests.

usage: workers.py ROOT INDEX SEED OPS   (OPS < 0: run until killed)
Exits 1 on any error other than the expected races (an image another process deleted, a layer
another process released, a parent change that would make a cycle).
"""

from __future__ import annotations

import json
import random
import sys

import imagestore
from imagestore.errors import ImageNotFound, ImageStoreError, LayerNotFound


def main(root: str, index: str, seed: int, ops: int) -> int:
    rng = random.Random(seed)
    with imagestore.open(root, index) as store:
        stacks = [img.rootfs.diff_ids for img in store.map().values()] or [[]]
        i = 0
        while ops < 0 or i < ops:
            i += 1
            ids = sorted(store.map())
            op = rng.random()
            try:
                if op < 0.45 or not ids:
                    diff_ids = rng.choice(stacks)
                    cfg = {"comment": f"worker {seed} op {i}",
                           "rootfs": {"type": "layers", "diff_ids": diff_ids}}
                    store.create(json.dumps(cfg).encode())
                elif op < 0.65:
                    store.delete(rng.choice(ids))
                elif op < 0.85:
                    store.set_parent(rng.choice(ids), rng.choice(ids))
                elif op < 0.95:
                    store.set_last_updated(rng.choice(ids))
                else:
                    store.sync()
            except (ImageNotFound, LayerNotFound):
                pass
            except ImageStoreError as exc:
                if "cycle" not in str(exc):
                    print(f"worker {seed}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
