"""What signs what: content files and layer folders by their folder, metadata by each image's
folder, the racy rule, and the one-time comparison of an index signed the old way."""

from __future__ import annotations

import os
import time
from pathlib import Path

import imagestore
from imagestore.index import Index
from imagestore.moby.root import CONTENT, LAYERS, METADATA, Root
from imagestore.sync.signatures import bucket, digests, legacy_signature

SETTLED = time.time_ns() - 3600 * 10**9


def _settle(root: Path) -> None:
    """Every folder an hour old: nothing is racy."""
    for folder in (root / CONTENT, root / LAYERS, *(root / METADATA).iterdir()):
        os.utime(folder, ns=(SETTLED, SETTLED))


def test_an_unchanged_root_lists_no_content_or_layer_folder(real_root: Path,
                                                            index: Path) -> None:
    _settle(real_root)
    with imagestore.open(real_root, index) as store:
        store.sync()
        report = store.sync()
    assert CONTENT not in report.listed and LAYERS not in report.listed
    assert (report.read, report.compared) == ({}, {})


def test_a_recently_changed_metadata_folder_is_read_until_it_settles(real_root: Path,
                                                                     index: Path) -> None:
    _settle(real_root)
    folder = next((real_root / METADATA).iterdir())
    with imagestore.open(real_root, index) as store:
        store.sync()
        os.utime(folder)  # just now: a second write in this tick would keep the mtime
        for _ in range(2):
            report = store.sync()
            assert report.read == {METADATA: 1}
            assert report.changed == 0  # read again, but nothing in it changed
        os.utime(folder, ns=(SETTLED + 1, SETTLED + 1))
        assert store.sync().read == {METADATA: 1}  # once more, as it settled
        assert store.sync().read == {}


def test_a_recently_changed_content_folder_is_listed_but_nothing_read(real_root: Path,
                                                                      index: Path) -> None:
    _settle(real_root)
    with imagestore.open(real_root, index) as store:
        store.sync()
        os.utime(real_root / CONTENT)
        report = store.sync()
    assert CONTENT in report.listed
    assert report.read == {}


def test_an_index_signed_per_file_is_compared_the_old_way_once(real_root: Path,
                                                               index: Path) -> None:
    """An index from before folder signatures: its first sync reads nothing unchanged."""
    imagestore.open(real_root, index).close()
    root = Root(real_root)
    engine_index = Index.open(index, real_root, readonly=False)
    with engine_index.write() as tx:  # as the previous version left it
        for kind in (CONTENT, METADATA):
            names = sorted(os.listdir(real_root / kind))
            sigs = {n: s for n in names if (s := legacy_signature(root, kind, n)) is not None}
            sums = digests(sigs.items())
            rows = [(k, sums[k][0], {n: s for n, s in sigs.items() if bucket(n) == k})
                    for k in sorted(sums)]
            tx.buckets.save(kind, rows, tx.buckets.digests(kind).keys())
        for key in ("signature-scheme", "folder-signature:" + CONTENT):
            tx.buckets.set_setting(key, None)
    engine_index.close()
    with imagestore.open(real_root, index) as store:
        assert store.last_sync is not None
        assert store.last_sync.read == {}  # compared the old way: nothing had changed
        assert len(store) == 39
        again = store.sync()
    assert (again.read, again.compared) == ({}, {})


def test_a_warm_sync_writes_nothing_to_the_index(real_root: Path, index: Path) -> None:
    _settle(real_root)
    with imagestore.open(real_root, index) as store:
        store.sync()
        wal = Path(str(index) + "-wal")
        before = (index.read_bytes(), wal.read_bytes() if wal.exists() else b"")
        store.sync()
        assert (index.read_bytes(), wal.read_bytes() if wal.exists() else b"") == before
