"""One writer per index at a time, across processes: an ``flock`` on a file beside it
(released by the kernel when the holder dies)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from imagestore.errors import IndexUnavailable

# Descriptors of the writers' locks this process holds: a forked worker closes its copies
# (an flock belongs to the open file, so a worker outliving its parent would hold it).
_HELD: set[int] = set()


def held() -> tuple[int, ...]:
    return tuple(_HELD)


@contextlib.contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    with unavailable(path, "cannot lock index"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _HELD.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)


@contextlib.contextmanager
def unavailable(path: Path, what: str) -> Iterator[None]:
    """An ``OSError`` about ``path`` as one clear ``IndexUnavailable``."""
    try:
        yield
    except OSError as exc:
        raise IndexUnavailable(f"{what} {path}: {exc.strerror or exc}") from None
