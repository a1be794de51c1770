"""Spreading a pass over worker processes: reading, hashing and parsing 100,000 configs, or
stat-ing 400,000 entries, is CPU and system-call work that two cores do in half the time.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

# Below this many items a pass stays in-process: starting workers costs more than it saves.
PARALLEL_MIN = 4000
CHUNK = 1000

R = TypeVar("R")
T = TypeVar("T")


def _context() -> multiprocessing.context.BaseContext:
    # fork is cheap and the children touch no inherited handle; with other threads alive
    # fork is unsafe, so fall back to forkserver.
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver")


def chunked_map(fn: Callable[[str, Sequence[T]], R], base: str, names: Sequence[T], *,
                chunk: int = CHUNK) -> Iterator[R]:
    """``fn(base, chunk)`` over chunks of ``names``, in order; in worker processes when the
    pass is large and the machine has more than one core."""
    chunks = [names[i : i + chunk] for i in range(0, len(names), chunk)]
    workers = min(os.cpu_count() or 1, 8)
    if len(names) < PARALLEL_MIN or workers < 2:
        for part in chunks:
            yield fn(base, part)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        # A bounded window of chunks in flight keeps memory flat while the caller writes.
        pending: deque[Future[R]] = deque()
        for part in chunks:
            pending.append(pool.submit(fn, base, part))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
