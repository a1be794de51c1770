"""Spreading a pass over worker processes: reading, hashing and parsing 100,000 configs, or
stat-ing 400,000 entries, is CPU and system-call work that two cores do in half the time.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TypeVar

from imagestore.index.locks import held

# Below this many items a pass stays in-process: starting workers costs more than it saves.
PARALLEL_MIN = 4000
CHUNK = 1000

R = TypeVar("R")
T = TypeVar("T")


class _Shared:
    def __init__(self) -> None:
        # Decided before the pass starts its own pool, whose threads must not count.
        self.workers = _workers()
        self.pool: ProcessPoolExecutor | None = None


_SHARED: contextvars.ContextVar[_Shared | None] = contextvars.ContextVar("shared", default=None)


def _workers() -> int:
    """Processes for a large pass: one per core (forked: cheap, and the children touch no
    inherited handle), or none while other threads are alive. Forking then is unsafe (a lock
    another thread holds stays held in the child), and the other start methods run the
    caller's main script again in every worker, which hangs a script with no ``__main__``
    guard on the writers' lock its own sync holds: the pass runs in this process instead."""
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(os.cpu_count() or 1, 8)


@contextlib.contextmanager
def shared_workers() -> Iterator[None]:
    """Let every large ``chunked_map`` inside share one set of workers, started at the first
    (a warm sync scans several folders: starting workers once per folder shows at 20,000)."""
    shared = _Shared()
    token = _SHARED.set(shared)
    try:
        yield
    except BaseException:
        if shared.pool is not None:  # interrupted or failed: the work left is not wanted
            _stop(shared.pool)
            shared.pool = None
        raise
    finally:
        _SHARED.reset(token)
        if shared.pool is not None:
            shared.pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """End a pool's workers now, not after the chunks they are working on."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, AttributeError):
            process.kill()
    for process in processes:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            process.join(5)


def chunked_map(fn: Callable[[str, Sequence[T]], R], base: str, names: Sequence[T], *,
                chunk: int = CHUNK) -> Iterator[R]:
    """``fn(base, chunk)`` over chunks of ``names``, in order; in worker processes when the
    pass is large and the machine has more than one core."""
    chunks = _chunks(names, chunk)
    shared = _SHARED.get()
    workers = _workers() if shared is None else shared.workers
    if len(names) < PARALLEL_MIN or workers < 2:
        for part in chunks:
            yield fn(base, part)
        return
    # A bounded window of chunks in flight keeps memory flat while the caller writes.
    if shared is None:
        pool: ProcessPoolExecutor | None = None
        try:
            with _interrupts_held():  # made and named before a Ctrl-C can leave it behind
                pool = _new_pool(workers)
            yield from _handed_out(pool, fn, base, chunks, 2 * workers)
        except BaseException:
            if pool is not None:
                _stop(pool)
                pool = None
            raise
        finally:
            if pool is not None:
                pool.shutdown()
        return
    yield from _handed_out(_pool(shared), fn, base, chunks, 2 * workers)


def started_map(fn: Callable[[str, Sequence[T]], R], base: str, names: Sequence[T], *,
                chunk: int = CHUNK, ahead: int | None = None) -> Iterator[R]:
    """``chunked_map`` with the workers started now, to be collected later: they work while
    the caller does something else. ``ahead`` chunks (``None``: all) wait for the caller at
    most; in-process, the work is done as the results are read."""
    shared = _SHARED.get()
    if len(names) < PARALLEL_MIN or shared is None or shared.workers < 2:
        return chunked_map(fn, base, names, chunk=chunk)
    chunks = _chunks(names, chunk)
    return _handed_out(_pool(shared), fn, base, chunks, ahead or len(chunks), now=True)


def started_call(fn: Callable[[str, T], R], base: str, arg: T) -> Callable[[], R]:
    """``fn(base, arg)`` handed to the pass's workers now, if they are running (this starts
    none: it is for one task of unknown size), its result to be asked for later; else the
    call is made then, in this process."""
    shared = _SHARED.get()
    if shared is None or shared.pool is None:
        return functools.partial(fn, base, arg)
    return shared.pool.submit(fn, base, arg).result


def start_workers() -> bool:
    """Start the pass's workers now, if the machine and the caller allow them: for work
    known to be large before any of it is handed out. True when they run."""
    shared = _SHARED.get()
    if shared is None or shared.workers < 2:
        return False
    _pool(shared)
    return True


def _chunks(names: Sequence[T], size: int) -> list[Sequence[T]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def _new_pool(workers: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_start, initargs=(os.getpid(), held()))
    try:
        with _interrupts_held():
            pool.submit(int)  # every worker forked now, while Ctrl-C waits
    except BaseException:  # a Ctrl-C held back is delivered as the block ends
        _stop(pool)
        raise
    return pool


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C held back while processes are forked, then delivered: a KeyboardInterrupt
    raised in an at-fork hook is swallowed ("Exception ignored") and may leave a lock held,
    after which the pass either ignores Ctrl-C or hangs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if pending and callable(old):
            old(signal.SIGINT, None)


_PR_SET_PDEATHSIG = 1


def _worker_start(parent: int, locks: tuple[int, ...]) -> None:
    """A worker never holds its parent's writers' lock, and never outlives its parent,
    whatever signal ended it: otherwise a killed sync leaves workers that keep the lock and
    every later writer waits forever."""
    for fd in locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    # Ctrl-C reaches the whole process group: the parent alone decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(shared: _Shared) -> ProcessPoolExecutor:
    """The pass's workers, started at the first call that needs them."""
    if shared.pool is None:
        # A Ctrl-C waits until the pool is the pass's, which stops it: one delivered
        # in between left a pool nobody stopped, whose threads kept the process from exiting.
        with _interrupts_held():
            shared.pool = _new_pool(shared.workers)
    return shared.pool


def _handed_out(pool: Executor, fn: Callable[[str, Sequence[T]], R], base: str,
                chunks: list[Sequence[T]], ahead: int, *, now: bool = False) -> Iterator[R]:
    """The results in order, with ``ahead`` chunks handed to the workers before the first is
    asked for (``now``: at once, else at the first ``next``), and one more as each is."""
    pending: deque[Future[R]] = deque()

    def hand_out(parts: Sequence[Sequence[T]]) -> None:
        pending.extend(pool.submit(fn, base, part) for part in parts)

    def results() -> Iterator[R]:
        if not now:
            hand_out(chunks[:ahead])
        try:
            for part in chunks[ahead:]:
                result = pending.popleft().result()
                hand_out([part])
                yield result
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # a caller that stops early leaves no work queued
                future.cancel()

    if now:
        hand_out(chunks[:ahead])
    return results()
