"""The bbolt reader and BuildKit's snapshots.db: real files from a Docker data root after a
BuildKit build, files built here by a tiny bbolt writer, and damaged files of both kinds."""

from __future__ import annotations

import builtins
import fcntl
import math
import os
import shutil
import struct
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagestore.errors import ImageStoreError
from imagestore.moby import bbolt, buildkit
from imagestore.moby.bbolt import BoltError, Bucket

TARBALL = Path(__file__).parent / "data" / "engine-roots" / "root-A-buildkit.tar.xz"
BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
MAGIC = 0xED0CDAED

Tree = dict[bytes, Union[bytes, "Tree"]]


# --- a tiny bbolt writer ------------------------------------------------------------------


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


class Writer:
    """Lays buckets out as bbolt does: small leaf-only buckets inline, others as a B+tree of
    leaves (at most ``leaf_max`` elements each) under branch pages, big values spilling onto
    overflow pages. ``stats`` counts what was written, so tests can prove they exercised it."""

    def __init__(self, page_size: int = 4096, leaf_max: int = 64, order: str = "<",
                 inline: bool = True) -> None:
        self.ps, self.leaf_max, self.order, self.inline = page_size, leaf_max, order, inline
        self.pages: dict[int, bytes] = {}
        self.kinds: dict[int, str] = {}
        self.next = 3  # 0 and 1: metas, 2: the (empty) freelist
        self.stats: Counter[str] = Counter()

    def header(self, pgid: int, flags: int, count: int, overflow: int) -> bytes:
        return struct.pack(self.order + "QHHI", pgid, flags, count, overflow)

    def raw(self, flags: int, count: int, body: bytes) -> int:
        """Allocates a page (with overflow pages when ``body`` needs them)."""
        n = max(1, math.ceil((16 + len(body)) / self.ps))
        pgid, self.next = self.next, self.next + n
        data = self.header(pgid, flags, count, n - 1) + body
        self.pages[pgid] = data + b"\0" * (n * self.ps - len(data))
        self.kinds[pgid] = {BRANCH: "branch", LEAF: "leaf"}.get(flags, "other")
        if n > 1:
            self.stats["overflow"] += 1
        return pgid

    def leaf_body(self, elements: list[tuple[int, bytes, bytes]]) -> bytes:
        heads, data = [], b""
        for i, (flags, key, value) in enumerate(elements):
            pos = 16 * (len(elements) - i) + len(data)
            heads.append(struct.pack(self.order + "IIII", flags, pos, len(key), len(value)))
            data += key + value
        return b"".join(heads) + data

    def branch_body(self, children: list[tuple[bytes, int]]) -> bytes:
        heads, data = [], b""
        for i, (key, pgid) in enumerate(children):
            pos = 16 * (len(children) - i) + len(data)
            heads.append(struct.pack(self.order + "IIQ", pos, len(key), pgid))
            data += key
        return b"".join(heads) + data

    def tree(self, elements: list[tuple[int, bytes, bytes]]) -> int:
        """The root page of a B+tree holding ``elements`` in the order given."""
        if not elements:
            return self.raw(LEAF, 0, b"")
        step = self.leaf_max
        level = [(chunk[0][1], self.raw(LEAF, len(chunk), self.leaf_body(chunk)))
                 for chunk in (elements[i:i + step] for i in range(0, len(elements), step))]
        while len(level) > 1:
            level = [(chunk[0][0], self.raw(BRANCH, len(chunk), self.branch_body(chunk)))
                     for chunk in (level[i:i + step] for i in range(0, len(level), step))]
            self.stats["branch"] += len(level)
        return level[0][1]

    def elements(self, tree: Tree) -> list[tuple[int, bytes, bytes]]:
        return [(1, k, self.bucket_value(v)) if isinstance(v, dict) else (0, k, v)
                for k, v in sorted(tree.items())]

    def bucket_value(self, tree: Tree, sequence: int = 0) -> bytes:
        elements = self.elements(tree)
        body = self.leaf_body(elements)
        if self.inline and all(f == 0 for f, _, _ in elements) and 16 + len(body) <= self.ps // 4:
            self.stats["inline"] += 1
            return (struct.pack(self.order + "QQ", 0, sequence)
                    + self.header(0, LEAF, len(elements), 0) + body)
        return struct.pack(self.order + "QQ", self.tree(elements), sequence)

    def meta(self, pgid: int, root: int, txid: int, sequence: int = 0) -> bytes:
        m = struct.pack(self.order + "IIIIQQQQQ", MAGIC, 2, self.ps, 0, root, sequence, 2,
                        self.next, txid)
        return self.header(pgid, META, 0, 0) + m + struct.pack(self.order + "Q", fnv1a64(m))

    def finish(self, metas: list[tuple[int, int]]) -> bytes:
        """The file: ``metas`` is ``[(root, txid)]`` for pages 0 and 1."""
        out = bytearray(self.next * self.ps)
        for pgid, (root, txid) in enumerate(metas):
            out[pgid * self.ps:pgid * self.ps + 80] = self.meta(pgid, root, txid)
        out[2 * self.ps:2 * self.ps + 16] = self.header(2, FREELIST, 0, 0)
        for pgid, data in self.pages.items():
            out[pgid * self.ps:pgid * self.ps + len(data)] = data
        return bytes(out)

    def build(self, tree: Tree) -> bytes:
        root = self.tree(self.elements(tree))
        return self.finish([(root, 4), (root, 3)])


def as_tree(bucket: Bucket) -> Tree:
    return {k: as_tree(v) if isinstance(v, Bucket) else v for k, v in bucket.items()}


def read_bytes(path: Path, data: bytes) -> Bucket:
    path.write_bytes(data)
    return bbolt.read(path)


SAMPLE: Tree = {
    b"plain": b"value",
    b"empty": b"",
    b"big": bytes(range(256)) * 80,  # 20 KiB: overflow pages at any page size here
    b"inline": {b"a": b"1", b"b": b"2"},
    b"nested": {b"child": {b"leaf": b"x" * 3000, b"deeper": {b"k": b"v"}}, b"z": b"last"},
    b"many": {f"key-{i:04}".encode(): f"value-{i}".encode() * 3 for i in range(300)},
    b"emptybucket": {},
}


def sample_file(**options: Any) -> tuple[bytes, Writer]:
    w = Writer(**options)
    return w.build(SAMPLE), w


# --- the real data root --------------------------------------------------------------------


@pytest.fixture(scope="session")
def root_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root-A after a real BuildKit build: regular files and folders only (no device nodes)."""
    dest = tmp_path_factory.mktemp("engine-root")
    with tarfile.open(TARBALL) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest, members=members)
    return dest / "root-A"


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bbolt")


def vfs_folders(root: Path) -> tuple[set[str], set[str]]:
    """The ``vfs/dir`` folders, and those a layer's cache-id or a mount's IDs name."""
    layerdb = root / "image" / "vfs" / "layerdb"
    used = {p.read_text().strip() for p in layerdb.glob("sha256/*/cache-id")}
    used |= {p.read_text().strip() for name in ("mount-id", "init-id")
             for p in layerdb.glob(f"mounts/*/{name}")}
    return {p.name for p in (root / "vfs" / "dir").iterdir()}, used


def test_real_snapshots_db_names_exactly_the_unreferenced_vfs_folders(root_a: Path) -> None:
    owned = buildkit.owned_folders(root_a)
    assert owned.unreadable is None
    folders, referenced = vfs_folders(root_a)
    unreferenced = folders - referenced
    assert len(unreferenced) == 3
    assert (folders & owned.ids) - referenced == unreferenced
    assert folders & owned.ids & referenced  # BuildKit's folders that became layers


def test_real_snapshots_db_has_the_structure_the_docstring_describes(root_a: Path) -> None:
    root = bbolt.read(root_a / "buildkit" / "snapshots.db")
    assert root and all(isinstance(v, Bucket) for v in root.values())
    known = {b"parent", b"committed", b"iscommitted", b"chainid", b"size"}
    for snapshot in root.buckets().values():
        assert set(snapshot) <= known
        committed = snapshot.value(b"committed")
        if committed is not None:  # Commit(name, key) marks bucket ``key`` as committed
            target = root.bucket(committed)
            assert target is not None and target.value(b"iscommitted") == b""


@pytest.mark.parametrize(("relative", "bucket"), [
    ("containerd/daemon/io.containerd.metadata.v1.bolt/meta.db", b"v1"),
    ("buildkit/containerdmeta.db", b"v1"),
    ("network/files/local-kv.db", b"libnetwork"),
    ("volumes/metadata.db", b"volumes"),
    ("buildkit/cache.db", b"_result"),
    ("buildkit/metadata_v2.db", b"_main"),
])
def test_reads_the_other_real_bbolt_files(root_a: Path, relative: str, bucket: bytes) -> None:
    root = bbolt.read(root_a / relative)
    assert isinstance(root.get(bucket), Bucket)


def test_containerd_meta_db_nests_buckets_by_namespace(root_a: Path) -> None:
    v1 = bbolt.read(root_a / "containerd/daemon/io.containerd.metadata.v1.bolt/meta.db")
    version = v1.bucket(b"v1")
    assert version is not None and version.buckets()  # one bucket per namespace
    assert all(isinstance(ns, Bucket) for ns in version.buckets().values())


# --- metas -------------------------------------------------------------------------------


def two_root_file(txid_old: int = 1, txid_new: int = 2) -> bytes:
    w = Writer()
    old = w.tree(w.elements({b"which": b"old"}))
    new = w.tree(w.elements({b"which": b"new"}))
    return w.finish([(old, txid_old), (new, txid_new)])


def test_uses_the_valid_meta_with_the_higher_txid(scratch: Path) -> None:
    assert read_bytes(scratch / "m.db", two_root_file(1, 2))[b"which"] == b"new"
    assert read_bytes(scratch / "m.db", two_root_file(7, 2))[b"which"] == b"old"


@pytest.mark.parametrize("field", [0, 4, 8, 16, 48, 56])  # magic, version, page size, root..
def test_a_broken_meta_falls_back_to_the_other(scratch: Path, field: int) -> None:
    data = bytearray(two_root_file(1, 2))
    data[4096 + 16 + field] ^= 0x40  # meta 1 (txid 2) no longer checks out
    assert read_bytes(scratch / "m.db", bytes(data))[b"which"] == b"old"
    data = bytearray(two_root_file(2, 1))
    data[16 + field] ^= 0x40  # meta 0 (txid 2) broken: the page size is found by probing
    assert read_bytes(scratch / "m.db", bytes(data))[b"which"] == b"new"


def test_both_metas_broken_is_a_bolt_error(scratch: Path) -> None:
    data = bytearray(two_root_file())
    data[16 + 56] ^= 1
    data[4096 + 16 + 56] ^= 1
    with pytest.raises(BoltError, match=r"no valid meta page.*checksum mismatch"):
        read_bytes(scratch / "m.db", bytes(data))


def test_real_file_falls_back_to_its_older_meta(root_a: Path, scratch: Path) -> None:
    real = (root_a / "buildkit" / "snapshots.db").read_bytes()
    metas = [struct.unpack_from("<Q", real, off + 16 + 48)[0] for off in (0, 4096)]
    newer = metas.index(max(metas)) * 4096
    data = bytearray(real)
    data[newer + 16 + 56] ^= 0xFF
    older = read_bytes(scratch / "r.db", bytes(data))
    newest = bbolt.read(root_a / "buildkit" / "snapshots.db")
    assert older.keys() == newest.keys()
    changed = [k for k, v in newest.buckets().items()
               if as_tree(v) != as_tree(older.bucket(k) or Bucket())]
    assert len(changed) == 1  # the last transaction added one ``chainid``
    assert set(newest[changed[0]]) - set(older[changed[0]]) == {b"chainid"}
    data[(4096 - newer) + 16 + 56] ^= 0xFF
    with pytest.raises(BoltError):
        read_bytes(scratch / "r.db", bytes(data))


def test_checksum_is_fnv1a_64() -> None:
    assert bbolt.fnv1a64(b"") == 0xCBF29CE484222325
    assert bbolt.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert bbolt.fnv1a64(b"foobar") == 0x85944171F73967E8


# --- hand-built files read back --------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {}, {"page_size": 1024, "leaf_max": 3}, {"page_size": 16384}, {"order": ">"},
    {"inline": False, "leaf_max": 2},
])
def test_hand_built_files_read_back(scratch: Path, options: dict[str, Any]) -> None:
    data, w = sample_file(**options)
    assert as_tree(read_bytes(scratch / "h.db", data)) == SAMPLE
    if options.get("leaf_max", 64) < 64:
        assert w.stats["branch"] > 0
    assert w.stats["overflow"] > 0
    assert w.stats["inline"] > 0 or options.get("inline") is False


def test_bucket_sequence_and_accessors(scratch: Path) -> None:
    w = Writer()
    value = w.bucket_value({b"k": b"v"}, sequence=42)
    root = w.tree([(0, b"a", b"plain"), (1, b"b", value)])
    top = read_bytes(scratch / "s.db", w.finish([(root, 1), (root, 0)]))
    child = top.bucket(b"b")
    assert child is not None and child.sequence == 42 and child.value(b"k") == b"v"
    assert top.value(b"a") == b"plain" and top.bucket(b"a") is None and top.value(b"b") is None
    assert list(top.buckets()) == [b"b"] and top.get(b"missing") is None


trees: st.SearchStrategy[Tree] = st.recursive(
    st.dictionaries(st.binary(min_size=1, max_size=6),
                    st.binary(max_size=40)
                    | st.integers(1000, 5000).map(lambda n: bytes([n % 251]) * n),
                    max_size=8),
    lambda children: st.dictionaries(st.binary(min_size=1, max_size=6),
                                     st.binary(max_size=40) | children, max_size=8),
    max_leaves=20)


@settings(max_examples=100, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tree=trees, page_size=st.sampled_from([1024, 4096]), leaf_max=st.integers(2, 6),
       order=st.sampled_from(["<", ">"]), inline=st.booleans())
def test_random_trees_round_trip(scratch: Path, tree: Tree, page_size: int, leaf_max: int,
                                 order: str, inline: bool) -> None:
    w = Writer(page_size=page_size, leaf_max=leaf_max, order=order, inline=inline)
    assert as_tree(read_bytes(scratch / "rt.db", w.build(tree))) == tree


# --- damage ------------------------------------------------------------------------------


def branchy() -> tuple[Writer, int]:
    """Three levels: a root branch, two branches under it, leaves of two keys."""
    w = Writer(leaf_max=2)
    root = w.tree(w.elements({bytes([65 + i]): b"v" for i in range(7)}))
    assert w.kinds[root] == "branch"
    return w, root


def set_child(w: Writer, pgid: int, index: int, child: int) -> None:
    page = bytearray(w.pages[pgid])
    struct.pack_into("<Q", page, 16 + 16 * index + 8, child)
    w.pages[pgid] = bytes(page)


def first_child(w: Writer, pgid: int) -> int:
    child: int = struct.unpack_from("<Q", w.pages[pgid], 16 + 8)[0]
    return child


@pytest.mark.parametrize(("target", "message"), [
    ("itself", "reached twice"), ("its parent", "reached twice"),
    ("a sibling's page", "reached twice"), ("a meta", "is a meta page where"),
    ("the freelist", "is a freelist page where"), ("a page past the end", "high-water mark"),
])
def test_bad_child_pointers_are_bolt_errors(scratch: Path, target: str, message: str) -> None:
    w, root = branchy()
    middle = first_child(w, root)
    sibling_leaf = struct.unpack_from("<Q", w.pages[middle], 16 + 16 + 8)[0]
    child = {"itself": middle, "its parent": root, "a meta": 1, "the freelist": 2,
             "a page past the end": 10**6, "a sibling's page": sibling_leaf}[target]
    set_child(w, middle, 0, child)
    started = time.monotonic()
    with pytest.raises(BoltError, match=message):
        read_bytes(scratch / "c.db", w.finish([(root, 1), (root, 0)]))
    assert time.monotonic() - started < 1


def patched_page(w: Writer, pgid: int, offset: int, fmt: str, value: int) -> None:
    page = bytearray(w.pages[pgid])
    struct.pack_into(fmt, page, offset, value)
    w.pages[pgid] = bytes(page)


@pytest.mark.parametrize(("what", "offset", "fmt", "value", "message"), [
    ("unknown page flags", 8, "<H", 0x20, "unknown page flags 0x20"),
    ("two page flags", 8, "<H", BRANCH | LEAF, "unknown page flags 0x3"),
    ("a meta flag", 8, "<H", META, "meta page where"),
    ("a wrong page id", 0, "<Q", 99, "calls itself page 99"),
    ("too many elements", 10, "<H", 4000, "do not fit"),
    ("an overflow past the end", 12, "<I", 1000, "overflow"),
    ("an element past the page", 16 + 4, "<I", 0xFFFFFF00, "run past the page"),
    ("a key size past the page", 16 + 8, "<I", 5000, "run past the page"),
    ("unknown element flags", 16, "<I", 0x04, "unknown element flags"),
])
def test_damaged_leaf_pages_are_bolt_errors(scratch: Path, what: str, offset: int, fmt: str,
                                            value: int, message: str) -> None:
    w = Writer()
    root = w.tree([(0, b"a", b"1"), (0, b"b", b"2")])
    patched_page(w, root, offset, fmt, value)
    with pytest.raises(BoltError, match=message):
        read_bytes(scratch / "d.db", w.finish([(root, 1), (root, 0)]))


def test_keys_out_of_order_are_a_bolt_error(scratch: Path) -> None:
    w = Writer()
    root = w.tree([(0, b"b", b"1"), (0, b"a", b"2")])
    with pytest.raises(BoltError, match="out of order"):
        read_bytes(scratch / "o.db", w.finish([(root, 1), (root, 0)]))


def test_a_branch_page_inlined_is_a_bolt_error(scratch: Path) -> None:
    w = Writer()
    value = struct.pack("<QQ", 0, 0) + w.header(0, BRANCH, 0, 0)
    root = w.tree([(1, b"b", value)])
    with pytest.raises(BoltError, match="only leaf pages are inlined"):
        read_bytes(scratch / "i.db", w.finish([(root, 1), (root, 0)]))


def test_a_short_bucket_value_is_a_bolt_error(scratch: Path) -> None:
    w = Writer()
    root = w.tree([(1, b"b", b"short")])
    with pytest.raises(BoltError, match="bucket value of 5 bytes"):
        read_bytes(scratch / "i.db", w.finish([(root, 1), (root, 0)]))


def test_values_sharing_bytes_cannot_outgrow_the_file(scratch: Path) -> None:
    """Distinct one-byte keys whose values all cover the same 3000 bytes."""
    w = Writer()
    n, size = 200, 3000
    heads = [struct.pack("<IIII", 0, 16 * (n - i) + i, 1, size) for i in range(n)]
    root = w.raw(LEAF, n, b"".join(heads) + bytes(range(1, 256)) + b"\0" * size)
    with pytest.raises(BoltError, match="share bytes"):
        read_bytes(scratch / "v.db", w.finish([(root, 1), (root, 0)]))


def test_inline_buckets_sharing_bytes_do_not_blow_up(scratch: Path) -> None:
    """Each level holds two buckets (keys ``""`` and ``"k"``) over the same inline value:
    2**40 buckets if read naively."""
    value = struct.pack("<QQ", 0, 0) + struct.pack("<QHHI", 0, LEAF, 0, 0)
    for _ in range(40):
        elements = struct.pack("<IIII", 1, 33, 0, len(value)) + \
            struct.pack("<IIII", 1, 16, 1, len(value))
        value = struct.pack("<QQ", 0, 0) + struct.pack("<QHHI", 0, LEAF, 2, 0) + elements \
            + b"k" + value
    w = Writer()
    root = w.tree([(1, b"x", value)])
    started = time.monotonic()
    with pytest.raises(BoltError, match="share bytes"):
        read_bytes(scratch / "x.db", w.finish([(root, 1), (root, 0)]))
    assert time.monotonic() - started < 1


def test_truncated_files_are_bolt_errors(scratch: Path) -> None:
    data, _ = sample_file(page_size=1024, leaf_max=3)
    for length in [0, 15, 79, 1000, 1100, 2100, *range(3000, len(data), 701), len(data) - 1]:
        with pytest.raises(BoltError):
            read_bytes(scratch / "t.db", data[:length])


def test_a_page_past_the_end_of_the_file_is_a_bolt_error(scratch: Path) -> None:
    w, root = branchy()
    data = w.finish([(root, 1), (root, 0)])
    with pytest.raises(BoltError, match="past the end of the file"):
        read_bytes(scratch / "e.db", data[:len(data) - w.ps])


def test_missing_fifo_folder_or_symlink_is_a_bolt_error(scratch: Path) -> None:
    with pytest.raises(BoltError, match="cannot open"):
        bbolt.read(scratch / "does-not-exist.db")
    with pytest.raises(BoltError, match="not a regular file"):
        bbolt.read(scratch)
    fifo = scratch / "fifo.db"
    if not fifo.exists():
        os.mkfifo(fifo)
    with pytest.raises(BoltError, match="not a regular file"):  # and no hang on open
        bbolt.read(fifo)
    target, link = scratch / "target.db", scratch / "link.db"
    target.write_bytes(sample_file()[0])
    if not link.is_symlink():
        link.symlink_to(target)
    assert len(bbolt.read(target)) == len(SAMPLE)
    with pytest.raises(BoltError, match="is a symlink"):
        bbolt.read(link)


def test_bolt_error_is_an_imagestore_value_error() -> None:
    assert issubclass(BoltError, ImageStoreError) and issubclass(BoltError, ValueError)


# --- fuzz --------------------------------------------------------------------------------


def fix_checksums(data: bytearray, page_size: int) -> None:
    for off in (0, page_size):
        if off + 80 <= len(data):
            struct.pack_into("<Q", data, off + 72, fnv1a64(bytes(data[off + 16:off + 72])))


def mutations(size: int, page_size: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Byte changes biased to where the structure is: page headers, elements, metas."""
    anywhere = st.integers(0, size - 1)
    structural = st.builds(lambda page, off: min(page * page_size + off, size - 1),
                           st.integers(0, size // page_size - 1), st.integers(0, 127))
    return st.lists(st.tuples(anywhere | structural, st.integers(0, 255)), max_size=6)


def fuzz_once(path: Path, base: bytes, page_size: int, changes: list[tuple[int, int]],
              fix: bool, cut: int | None) -> None:
    data = bytearray(base)
    for offset, byte in changes:
        data[offset] = byte
    if fix:
        fix_checksums(data, page_size)
    if cut is not None:
        del data[cut:]
    started = time.monotonic()
    try:
        result: Bucket | None = read_bytes(path, bytes(data))
    except BoltError as exc:
        result = None
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)  # one line: where, what
    assert result is None or isinstance(result, Bucket)
    assert time.monotonic() - started < 1


REAL_SIZE = 32768
FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(changes=mutations(REAL_SIZE, 4096), fix=st.booleans(),
       cut=st.none() | st.integers(0, REAL_SIZE))
def test_fuzzed_real_snapshots_db_raises_only_bolt_error(
        root_a: Path, scratch: Path, changes: list[tuple[int, int]], fix: bool,
        cut: int | None) -> None:
    base = (root_a / "buildkit" / "snapshots.db").read_bytes()
    assert len(base) == REAL_SIZE
    fuzz_once(scratch / "fr.db", base, 4096, changes, fix, cut)


HAND_BUILT, _ = sample_file(page_size=1024, leaf_max=3)


@FUZZ
@given(changes=mutations(len(HAND_BUILT), 1024), fix=st.booleans(),
       cut=st.none() | st.integers(0, len(HAND_BUILT)))
def test_fuzzed_hand_built_file_raises_only_bolt_error(
        scratch: Path, changes: list[tuple[int, int]], fix: bool, cut: int | None) -> None:
    fuzz_once(scratch / "fh.db", HAND_BUILT, 1024, changes, fix, cut)


# --- read-only ---------------------------------------------------------------------------


@pytest.fixture
def read_only_copy(root_a: Path, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "snapshots.db"
    shutil.copyfile(root_a / "buildkit" / "snapshots.db", db)
    db.chmod(0o444)
    folder.chmod(0o555)
    yield db
    folder.chmod(0o755)


def test_reads_a_read_only_file_in_a_read_only_folder(read_only_copy: Path) -> None:
    before = (read_only_copy.read_bytes(), os.stat(read_only_copy).st_mtime_ns)
    assert len(bbolt.read(read_only_copy)) == 9
    assert (read_only_copy.read_bytes(), os.stat(read_only_copy).st_mtime_ns) == before
    assert [p.name for p in read_only_copy.parent.iterdir()] == ["snapshots.db"]


def test_opens_for_reading_only(read_only_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags_seen: list[int] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        flags_seen.append(flags)
        return real_open(path, flags, *args, **kwargs)

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"builtins.open{args}")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(builtins, "open", no_open)
    monkeypatch.setattr(fcntl, "flock", no_open)
    monkeypatch.setattr(fcntl, "lockf", no_open)
    bbolt.read(read_only_copy)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    assert flags_seen and all(f & writing == 0 and f & os.O_ACCMODE == os.O_RDONLY
                              for f in flags_seen)


def test_reads_while_a_writer_holds_the_lock(read_only_copy: Path) -> None:
    """bbolt's writer holds an exclusive flock; a reader that took a shared one would wait."""
    fd = os.open(read_only_copy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result: list[int] = []
        reader = threading.Thread(target=lambda: result.append(len(bbolt.read(read_only_copy))),
                                  daemon=True)
        reader.start()
        reader.join(5)
        assert result == [9]
    finally:
        os.close(fd)


# --- BuildKit ----------------------------------------------------------------------------


def test_no_snapshots_db_means_buildkit_owns_nothing(tmp_path: Path) -> None:
    assert buildkit.owned_folders(tmp_path) == buildkit.BuildKitFolders(frozenset(), None)
    (tmp_path / "buildkit").mkdir()
    assert buildkit.owned_folders(tmp_path) == buildkit.BuildKitFolders(frozenset(), None)


def test_a_broken_snapshots_db_says_why_and_names_nothing(root_a: Path, tmp_path: Path) -> None:
    db = buildkit.snapshots_db(tmp_path)
    db.parent.mkdir()
    data = bytearray((root_a / "buildkit" / "snapshots.db").read_bytes())
    data[16 + 56] ^= 1
    data[4096 + 16 + 56] ^= 1
    db.write_bytes(bytes(data))
    owned = buildkit.owned_folders(tmp_path)
    assert owned.ids == frozenset()
    assert owned.unreadable is not None and "snapshots.db" in owned.unreadable
    assert "no valid meta page" in owned.unreadable


def test_a_snapshots_db_that_is_not_a_file_is_unreadable(tmp_path: Path) -> None:
    buildkit.snapshots_db(tmp_path).mkdir(parents=True)
    owned = buildkit.owned_folders(tmp_path)
    assert owned.ids == frozenset() and owned.unreadable is not None
    assert "not a regular file" in owned.unreadable


def test_keys_and_committed_values_are_owned(tmp_path: Path) -> None:
    db = buildkit.snapshots_db(tmp_path)
    db.parent.mkdir()
    db.write_bytes(Writer().build({
        b"active1": {b"parent": b""},
        b"name1": {b"committed": b"folder1"},
        b"folder1": {b"iscommitted": b""},
        b"sha256:" + b"a" * 64: {},
        b"..": {b"committed": b"a/b"},
    }))
    owned = buildkit.owned_folders(tmp_path)
    assert owned.unreadable is None
    assert owned.ids == {"active1", "name1", "folder1", "sha256:" + "a" * 64}


def test_unreadable_buildkit_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "buildkit").write_bytes(b"not a folder")
    owned = buildkit.owned_folders(tmp_path)
    assert owned.ids == frozenset() and owned.unreadable is not None
    assert "snapshots.db" in owned.unreadable
