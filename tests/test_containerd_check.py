"""fsck of containerd's image store (``imagestore.containerd.check``), on copies of the two
real roots: root A (containerd 1.6 through ``ctr``: namespaces moby, k8s.io, default) and
root C (Docker 29.7.2 on containerd 2.3.3: namespace moby).

The clean roots give the findings they really have (none; each test below says why), then
every damage gives exactly the finding it should, and the tree under the root is the same,
byte for byte, before and after every check.

meta.db cannot be rewritten here (no bbolt writer), so records are damaged in two ways: a
same-length edit of one value in a copy of the file (bbolt pages carry no checksum; the
edit is proven to hit the live record by decoding the file again), or records added to the
decoded ``Meta`` handed to ``check_meta``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from containerd_daemon import ROOT_A, ROOT_C

from imagestore.containerd import check_gc as gc
from imagestore.containerd import meta as cm
from imagestore.containerd import snapshotter
from imagestore.containerd.check import (
    KINDS,
    CtdFinding,
    NoSuchNamespace,
    check,
    check_meta,
)
from imagestore.containerd.layout import Layout

DATA = Path(__file__).parent / "data"
# A fixed clock: before root A's lease "fixture-lease" expires (2026-12-08T23:24:31Z).
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=timezone.utc)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# Root A, namespace moby: docker.io/library/app:1 (= app:latest = registry…/app:1).
# Digest prefixes, completed from the records by ``full``.
APP1_MANIFEST = "sha256:fee7001b04ba"
APP1_CONFIG = "sha256:4dec2d8c5395"
APP1_LAYER1 = "sha256:ee0f2e37ec36"  # only app:1's manifest names it
TOOL_V1 = "sha256:6c204182335d"  # tool:v1's manifest; its config and second layer:
TOOL_CONFIG, TOOL_LAYER1 = "sha256:ce389a87d764", "sha256:3b6d6779dcb4"
TOOL_SNAPSHOT = "sha256:d7bcde2f9ddf"  # tool:v1's top chain ID (only its config names it)
CONTAINER = "0123456789abcdef" * 4  # the container's id and its Active snapshot's key


# --- helpers --------------------------------------------------------------------------------

def _extract(tarball: Path, dest: Path, top: str) -> Layout:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="tar")  # root C has absolute symlinks in a snapshot
    return Layout(dest / top)


@pytest.fixture
def root_a(tmp_path: Path) -> Layout:
    return _extract(ROOT_A, tmp_path, "containerd")


@pytest.fixture
def root_c(tmp_path: Path) -> Layout:
    return _extract(ROOT_C, tmp_path, "ctd-root")


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: its type, mode, size, mtime and content hash (regular
    files up to 64 MiB; bigger ones by inode, size and mtime), or a symlink's target. FIFOs
    and devices are never opened."""
    out: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            kind = stat.S_IFMT(info.st_mode)
            extra: Any = None
            if stat.S_ISREG(info.st_mode):
                extra = hashlib.sha256(path.read_bytes()).hexdigest() \
                    if info.st_size <= 64 << 20 else info.st_ino
            elif stat.S_ISLNK(info.st_mode):
                extra = os.readlink(path)
            size = info.st_size if not stat.S_ISDIR(info.st_mode) else None
            out[rel] = (kind, info.st_mode, size, info.st_mtime_ns, extra)
    return out


@pytest.fixture
def unchanged() -> Iterator[Callable[[Layout], None]]:
    """``unchanged(layout)`` before a check: the tree must be the same after the test."""
    roots: list[tuple[Path, dict[str, tuple[Any, ...]]]] = []

    def watch(layout: Layout) -> None:
        roots.append((layout.root, tree(layout.root)))

    yield watch
    for root, before in roots:
        assert tree(root) == before, "the check changed something under the root"


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A check that blocks (a FIFO opened for reading, an endless read) fails the test."""
    def _alarm(signum: int, frame: object) -> None:
        raise TimeoutError("the check hung")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(layout: Layout, namespace: str, **kw: Any) -> list[CtdFinding]:
    findings = check(layout, namespace, now=NOW, **kw)
    assert all(f.kind in KINDS for f in findings)
    return findings


def kinds(findings: list[CtdFinding]) -> list[tuple[str, str]]:
    return [(f.kind, f.subject) for f in findings]


def full(layout: Layout, prefix: str, namespace: str = "moby") -> str:
    """The one recorded digest of ``namespace`` that starts with ``prefix``."""
    ns = cm.read(layout.meta).namespaces[namespace]
    found = [d for d in ns.blobs if d.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def writable(path: Path) -> Path:
    path.chmod(path.stat().st_mode | 0o200)
    return path


def patch_value(db: Path, old: bytes, new: bytes, proof: Callable[[], bool]) -> None:
    """Replace one stored ``old`` (key and value bytes, contiguous in a bbolt leaf) with
    ``new`` of the same length, choosing the occurrence that ``proof`` shows live (freed
    pages keep stale copies)."""
    assert len(old) == len(new)
    original = db.read_bytes()
    writable(db)
    for m in re.finditer(re.escape(old), original):
        db.write_bytes(original[:m.start()] + new + original[m.end():])
        if proof():
            return
    db.write_bytes(original)
    raise AssertionError(f"no live copy of {old!r} in {db}")


def write_blob(layout: Layout, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout.blob(digest)
    path.write_bytes(data)
    return digest


def with_records(layout: Layout, namespace: str, **changes: Any) -> tuple[cm.Meta, cm.Namespace]:
    meta = cm.read(layout.meta)
    ns = meta.namespaces[namespace]
    for name, value in changes.items():
        getattr(ns, name).update(value)
    return meta, ns


# --- the clean roots ------------------------------------------------------------------------

@pytest.mark.parametrize("namespace", ["moby", "k8s.io", "default"])
def test_root_a_is_clean(root_a: Layout, namespace: str,
                         unchanged: Callable[[Layout], None]) -> None:
    """Root A has nothing wrong, in any namespace, and that is what is found:
    * every blob file has a record in some namespace, every record a file of the right
      size whose content hashes to its digest (ctr wrote them all), and every platform its
      indexes name is there (multi/arch:1.0: amd64, arm64 and the attestation manifest);
    * moby: each target, config and layer is reached by ``gc.ref.content.*`` labels from an
      image record, every snapshot through a config's ``gc.ref.snapshot.overlayfs`` and its
      parents, the container's Active snapshot through the container record; the lease
      ``moby-lease-x`` holds nothing;
    * k8s.io: the same, under the CRI's extra names (``repo@sha256:…``, ``sha256:<config>``);
    * default: an index not unpacked (no snapshots: not a defect) and
      ``example.org/bundle:all``, an index wrapping that index, reached through its
      ``gc.ref.content.0`` label; ``fixture-lease`` holds nothing;
    * no ingest folder, no ingest record, and each snapshot record's backend is in the
      overlayfs ``metadata.db`` chained to its parent's backend."""
    unchanged(root_a)
    assert run(root_a, namespace) == []


def test_root_c_is_clean(root_c: Layout, unchanged: Callable[[Layout], None]) -> None:
    """Root C (a real Docker 29) has nothing wrong either, though it has all of these:
    * ``oci-partial:latest``, an index loaded for one platform: the other platform's
      manifest has neither record nor file, which is normal (Docker pulls one platform);
    * eleven ``moby/container.config`` blobs no image JSON names: they are reached through
      the builder's ``containerd.io/gc.ref.content.moby/container.config`` labels;
    * the committed container's two snapshots are held by Docker's lease, not by a config.
    """
    ns = cm.read(root_c.meta).namespaces["moby"]
    index = json.loads(root_c.blob(ns.images["docker.io/library/oci-partial:latest"]
                                   .target.digest).read_bytes())
    platforms = [m["digest"] for m in index["manifests"]]
    absent = [d for d in platforms if d not in ns.blobs and not root_c.blob(d).exists()]
    assert len(platforms) == 2 and len(absent) == 1
    assert sum(1 for b in ns.blobs.values()
               if any("moby/container.config" in k for k in b.labels)) == 11
    unchanged(root_c)
    assert run(root_c, "moby") == []


def test_an_unknown_namespace_is_an_error(root_a: Layout) -> None:
    with pytest.raises(NoSuchNamespace, match=r"namespaces: default, k8s\.io, moby"):
        check(root_a, "nope")


# --- damaged blobs --------------------------------------------------------------------------

def test_a_deleted_layer_blob(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    layer = full(root_a, APP1_LAYER1)
    root_a.blob(layer).unlink()
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("missing-blob", layer)]
    assert "its file is gone" in findings[0].message
    assert "layers[1]" in findings[0].message  # who needs it
    assert run(root_a, "k8s.io") == []  # k8s.io never recorded it


def test_a_flipped_byte_in_a_config(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    config = full(root_a, APP1_CONFIG)
    path = writable(root_a.blob(config))
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("digest-mismatch", config)]
    assert "hashes to sha256:" + hashlib.sha256(data).hexdigest() in findings[0].message


def test_a_truncated_manifest(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    """Its size tells already: reported, not hashed; its config and layers stay protected
    by the labels of its record, so nothing else is found."""
    manifest = full(root_a, APP1_MANIFEST)
    path = writable(root_a.blob(manifest))
    path.write_bytes(path.read_bytes()[:100])
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("size-mismatch", manifest)]
    assert "the file has 100 bytes (not hashed)" in findings[0].message
    assert "the record says 577 bytes" in findings[0].message
    assert "image docker.io/library/app:1, " in findings[0].message
    assert findings[0].message.endswith("says 577")


def test_a_huge_blob_is_not_hashed(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    layer = full(root_a, APP1_LAYER1)
    path = writable(root_a.blob(layer))
    os.truncate(path, 1 << 40)  # sparse: 1 TiB where 2560 bytes belong
    unchanged(root_a)
    started = time.monotonic()
    findings = run(root_a, "moby")
    assert time.monotonic() - started < 10
    assert kinds(findings) == [("size-mismatch", layer)]


@pytest.mark.parametrize("make, what", [
    (lambda p: p.symlink_to("/etc/hostname"), "a symlink"),
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: p.mkdir(), "a folder"),
])
def test_a_blob_path_that_is_not_a_file(root_a: Layout, unchanged: Callable[[Layout], None],
                                        make: Callable[[Path], None], what: str) -> None:
    """Never followed, never opened: a FIFO at a manifest's path would block a reader."""
    manifest = full(root_a, APP1_MANIFEST)
    path = root_a.blob(manifest)
    path.unlink()
    make(path)
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("bad-blob", manifest)]
    assert f"its file is {what}, not a regular file" in findings[0].message


# --- what the garbage collector would take --------------------------------------------------

def test_an_orphan_blob_with_a_namespace_record(root_a: Layout,
                                                unchanged: Callable[[Layout], None]) -> None:
    """tool:v1's record is turned to app:1's manifest (same size, same media type) in
    meta.db: its old manifest, that manifest's config and unshared layer, and the snapshot
    only that config names are what the collector takes; nothing else is."""
    old, new = full(root_a, TOOL_V1), full(root_a, APP1_MANIFEST)

    def proof() -> bool:
        return cm.read(root_a.meta).namespaces["moby"].images[
            "docker.io/library/tool:v1"].target.digest == new

    patch_value(root_a.meta, b"digest" + old.encode(), b"digest" + new.encode(), proof)
    unchanged(root_a)
    findings = run(root_a, "moby")
    config, layer = full(root_a, TOOL_CONFIG), full(root_a, TOOL_LAYER1)
    snapshot = next(k for k in cm.read(root_a.meta).namespaces["moby"].snapshots["overlayfs"]
                    if k.startswith(TOOL_SNAPSHOT))
    assert kinds(findings) == sorted([("unreferenced-blob", old), ("unreferenced-blob", config),
                                      ("unreferenced-blob", layer),
                                      ("unreferenced-snapshot", f"overlayfs/{snapshot}")])
    assert all("and the file with it" in f.message
               for f in findings if f.kind == "unreferenced-blob")
    assert run(root_a, "k8s.io") == []


def test_an_orphan_blob_record_added(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    """The same on decoded records: a blob and its record that nothing refers to; with a
    ``containerd.io/gc.root`` label it is kept."""
    digest = write_blob(root_a, b"nobody's blob\n")
    unchanged(root_a)
    record = cm.BlobRecord(digest, 14, None, {})
    meta, _ = with_records(root_a, "moby", blobs={digest: record})
    findings = check_meta(root_a, meta, "moby", now=NOW)
    assert kinds(findings) == [("unreferenced-blob", digest)]
    assert "removes the record, and the file with it" in findings[0].message
    rooted = dataclasses.replace(record, label_values={"containerd.io/gc.root": "x"})
    meta, _ = with_records(root_a, "moby", blobs={digest: rooted})
    assert check_meta(root_a, meta, "moby", now=NOW) == []


def test_a_blob_file_no_namespace_records(root_a: Layout,
                                          unchanged: Callable[[Layout], None]) -> None:
    """The content store is shared: a file no namespace records is the content collector's,
    whichever namespace is checked."""
    digest = write_blob(root_a, b"stray\n")
    unchanged(root_a)
    for namespace in ("moby", "k8s.io", "default"):
        findings = run(root_a, namespace)
        assert kinds(findings) == [("unreferenced-blob", digest)]
        assert "no namespace records this file" in findings[0].message


def test_a_needed_blob_no_label_protects(root_a: Layout,
                                         unchanged: Callable[[Layout], None]) -> None:
    """app:1's manifest record loses its gc.ref labels: its config and its own layer are
    still named by the manifest's JSON, yet the collector (which follows labels only) would
    take them. The shared base layer is protected by other manifests' labels."""
    unchanged(root_a)
    manifest = full(root_a, APP1_MANIFEST)
    meta = cm.read(root_a.meta)
    ns = meta.namespaces["moby"]
    ns.blobs[manifest] = dataclasses.replace(ns.blobs[manifest], label_values={})
    findings = check_meta(root_a, meta, "moby", now=NOW)
    config, layer = full(root_a, APP1_CONFIG), full(root_a, APP1_LAYER1)
    assert kinds(findings) == sorted([("unprotected-blob", config),
                                      ("unprotected-blob", layer)])
    assert all("needed by manifest " + manifest in f.message for f in findings)


# --- documents ------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage, why", [
    (b"{not json", "not JSON"),
    (b"[" * 100_000, "not JSON"),  # nesting deeper than the parser's stack
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"config": {"digest": "../../etc", "size": 1},
                 "layers": [1, {"digest": "sha256:ab", "size": True}]}).encode(),
     "its config is not a descriptor; layers[0] is not a descriptor; "
     "layers[1] is not a descriptor"),
])
def test_garbage_json(root_a: Layout, unchanged: Callable[[Layout], None],
                      garbage: bytes, why: str) -> None:
    digest = write_blob(root_a, garbage)
    unchanged(root_a)
    meta, _ = with_records(
        root_a, "moby",
        blobs={digest: cm.BlobRecord(digest, len(garbage), None, {})},
        images={"x:1": cm.ImageRecord("x:1", cm.Descriptor(digest, OCI_MANIFEST, len(garbage)),
                                      None, None, {})})
    findings = check_meta(root_a, meta, "moby", now=NOW)
    assert kinds(findings) == [("bad-document", digest)]
    assert findings[0].message.startswith(why)


def test_an_index_with_a_platform_recorded_but_gone(root_a: Layout,
                                                    unchanged: Callable[[Layout], None]) -> None:
    """A platform the namespace records must be there; one it does not record is normal."""
    ns = cm.read(root_a.meta).namespaces["default"]
    index = json.loads(root_a.blob(ns.images["localhost:5000/multi/arch:1.0"].target.digest)
                       .read_bytes())
    arm64 = next(m["digest"] for m in index["manifests"]
                 if m.get("platform", {}).get("architecture") == "arm64")
    root_a.blob(arm64).unlink()
    unchanged(root_a)
    findings = run(root_a, "default")
    assert kinds(findings) == [("missing-blob", arm64)]
    assert "manifests[1]" in findings[0].message
    # The same platform with no record is not a finding; what only it named (its config
    # and its own layer, still recorded) is then the collector's.
    meta = cm.read(root_a.meta)
    labels = meta.namespaces["default"].blobs.pop(arm64).labels
    shared = full(root_a, "sha256:efe37279e6aa", "default")  # the amd64 manifest's too
    only = sorted(v for v in labels.values() if v != shared)
    findings = check_meta(root_a, meta, "default", now=NOW)
    assert kinds(findings) == [("unreferenced-blob", d) for d in only]
    assert len(only) == 2


# --- ingests --------------------------------------------------------------------------------

def _ingest(layout: Layout, ref: str, data: bytes, total: int | None) -> Path:
    folder = layout.ingest / hashlib.sha256(ref.encode()).hexdigest()
    folder.mkdir()
    (folder / "ref").write_text(ref)
    (folder / "data").write_bytes(data)
    if total is not None:
        (folder / "total").write_text(str(total))
    (folder / "startedat").write_text("2026-12-07T23:30:00.123456789Z")
    (folder / "updatedat").write_text("2026-12-07T23:30:01.5Z")
    return folder


def test_a_fake_ingest_folder(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    folder = _ingest(root_a, "moby/42/layer-sha256:abc", b"0123456789", 1000)
    unchanged(root_a)
    findings = run(root_a, "moby")
    subject = f"io.containerd.content.v1.content/ingest/{folder.name}"
    assert kinds(findings) == [("ingest", subject)]
    assert "'layer-sha256:abc': 10 bytes of 1000" in findings[0].message
    assert "last written 2026-12-07T23:30:01.5Z" in findings[0].message
    assert "no ingest record" in findings[0].message
    assert run(root_a, "k8s.io") == []  # another namespace's write


def test_ingest_records(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    """A record with its folder (one finding, with the record's expiry), a record with no
    folder, and a folder with no readable ref (whose namespace nobody knows)."""
    folder = _ingest(root_a, "moby/7/pull-1", b"xy", None)
    odd = root_a.ingest / ("0" * 64)
    odd.mkdir()
    os.mkfifo(odd / "ref")
    unchanged(root_a)
    later = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta, _ = with_records(root_a, "moby", ingests={
        "pull-1": cm.IngestRecord("pull-1", None, "moby/7/pull-1", later),
        "pull-2": cm.IngestRecord("pull-2", "sha256:" + "a" * 64, "moby/8/pull-2", None)})
    findings = check_meta(root_a, meta, "moby", now=NOW)
    assert kinds(findings) == [
        ("ingest", "io.containerd.content.v1.content/ingest/" + "0" * 64),
        ("ingest", f"io.containerd.content.v1.content/ingest/{folder.name}"),
        ("ingest", "io.containerd.metadata.v1.bolt/meta.db#moby/content/ingests/pull-2")]
    assert "no readable ref" in findings[0].message
    assert "2 bytes, total unknown" in findings[1].message
    assert f"kept until {later}" in findings[1].message
    assert "with no expiry: containerd's garbage collector removes" in findings[2].message


# --- snapshots ------------------------------------------------------------------------------

def test_a_snapshot_record_whose_parent_is_gone(root_a: Layout,
                                                unchanged: Callable[[Layout], None]) -> None:
    """The container's Active snapshot, its parent key turned to one no record has (the
    old parent stays reached through app:1's config label: one finding)."""
    ns = cm.read(root_a.meta).namespaces["moby"]
    parent = ns.snapshots["overlayfs"][CONTAINER].parent
    assert parent is not None
    wrong = parent[:-1] + ("0" if parent[-1] != "0" else "1")

    def proof() -> bool:
        got = cm.read(root_a.meta).namespaces["moby"].snapshots["overlayfs"][CONTAINER]
        return got.parent == wrong

    patch_value(root_a.meta, b"parent" + parent.encode(), b"parent" + wrong.encode(), proof)
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("broken-snapshot-chain", f"overlayfs/{CONTAINER}")]
    assert f"its parent {wrong!r} is not a snapshot of the namespace" in findings[0].message


def test_a_backend_snapshot_whose_parent_is_gone(root_a: Layout,
                                                 unchanged: Callable[[Layout], None]) -> None:
    """In the overlayfs metadata.db, moby/4's parent moby/2/sha256:158e… → …158f…."""
    db = root_a.snapshotter_db("overlayfs")
    snaps, _ = snapshotter.read(db)
    name = next(n for n in snaps if n.startswith("moby/4/"))
    parent = snaps[name].parent
    assert parent is not None and parent.startswith("moby/2/sha256:158e")
    wrong = parent.replace("158e", "158f", 1)

    def proof() -> bool:
        return snapshotter.read(db)[0][name].parent == wrong

    patch_value(db, b"parent" + parent.encode(), b"parent" + wrong.encode(), proof)
    unchanged(root_a)
    findings = run(root_a, "moby")
    subject = f"io.containerd.snapshotter.v1.overlayfs/metadata.db#{name}"
    assert kinds(findings) == [("broken-snapshot-chain", subject)]
    key = name.split("/", 2)[2]
    assert f"(the backend of overlayfs/{key})" in findings[0].message
    assert run(root_a, "k8s.io") == []


def test_snapshot_records_against_their_backends(root_a: Layout,
                                                 unchanged: Callable[[Layout], None]) -> None:
    """On decoded records: a record whose backend the snapshotter lacks (kept by a gc.root
    label, so that is all), and one chained to another parent than its backend is."""
    unchanged(root_a)
    meta = cm.read(root_a.meta)
    records = meta.namespaces["moby"].snapshots["overlayfs"]
    records["ghost"] = cm.SnapshotRecord("overlayfs", "ghost", "moby/99/ghost", None,
                                         {"containerd.io/gc.root": ""})
    top = next(k for k, r in records.items() if r.parent and k.startswith("sha256:05a3"))
    records[top] = dataclasses.replace(records[top], parent=next(
        k for k in records if k.startswith("sha256:3f51")))
    findings = check_meta(root_a, meta, "moby", now=NOW)
    assert kinds(findings) == [("broken-snapshot-chain", "overlayfs/ghost"),
                               ("broken-snapshot-chain", f"overlayfs/{top}")]
    assert "is not in io.containerd.snapshotter.v1.overlayfs/metadata.db" in findings[0].message
    assert "chains" in findings[1].message


def test_a_missing_snapshotter_db(root_a: Layout, unchanged: Callable[[Layout], None]) -> None:
    root_a.snapshotter_db("overlayfs").unlink()
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("broken-snapshot-chain",
                                "io.containerd.snapshotter.v1.overlayfs/metadata.db")]
    assert "9 overlayfs snapshot records have no backend" in findings[0].message


# --- meta.db --------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbled", "fifo", "gone"])
def test_a_torn_or_unreadable_meta_db(root_a: Layout, unchanged: Callable[[Layout], None],
                                      damage: str) -> None:
    db = writable(root_a.meta)
    data = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(data[: len(data) // 3])
    elif damage == "garbled":
        db.write_bytes(bytes(b ^ 0x5A for b in data[:8192]) + data[8192:])
    else:
        db.unlink()
        if damage == "fifo":
            os.mkfifo(db)
    unchanged(root_a)
    findings = run(root_a, "moby")
    assert kinds(findings) == [("torn-read", "io.containerd.metadata.v1.bolt/meta.db")]
    assert "could not read a consistent copy" in findings[0].message


def test_a_garbled_page_deep_in_meta_db(root_a: Layout,
                                        unchanged: Callable[[Layout], None]) -> None:
    """Garbage in every page past the metas: a finding or a clean answer, never a crash."""
    db = writable(root_a.meta)
    data = bytearray(db.read_bytes())
    for page in range(2, len(data) // 4096):
        start = page * 4096 + 16 + (page * 7) % 100
        data[start:start + 8] = b"\xff\x00\x7f\x80garb"
    db.write_bytes(bytes(data))
    unchanged(root_a)
    for namespace in ("moby", "k8s.io", "default"):
        try:
            findings = run(root_a, namespace)
        except NoSuchNamespace:
            continue
        assert all(isinstance(f, CtdFinding) for f in findings)


# --- the collector's rules, on records ------------------------------------------------------

def _ns(**kw: Any) -> cm.Namespace:
    ns = cm.Namespace("t")
    for name, value in kw.items():
        setattr(ns, name, value)
    return ns


def _blob(digest: str, **labels: str) -> cm.BlobRecord:
    return cm.BlobRecord(digest, 1, None, labels)


REF = "containerd.io/gc.ref.content"


def test_gc_leases_flat_and_expired() -> None:
    blobs = {"a": _blob("a", **{f"{REF}.l.0": "b"}), "b": _blob("b"), "c": _blob("c")}
    lease = cm.LeaseRecord("l", {}, content=("a",))
    assert gc.reachable(_ns(blobs=blobs, lease_records={"l": lease}), NOW) == {
        ("content", "a"), ("content", "b")}
    flat = dataclasses.replace(lease, labels={"containerd.io/gc.flat": ""})
    assert gc.reachable(_ns(blobs=blobs, lease_records={"l": flat}), NOW) == {("content", "a")}
    gone = dataclasses.replace(lease, labels={"containerd.io/gc.expire": "2026-12-08T11:59:59Z"})
    assert gc.reachable(_ns(blobs=blobs, lease_records={"l": gone}), NOW) == set()
    bad = dataclasses.replace(lease, labels={"containerd.io/gc.expire": "tomorrow"})
    assert ("content", "a") in gc.reachable(_ns(blobs=blobs, lease_records={"l": bad}), NOW)


def test_gc_labels_roots_and_back_references() -> None:
    blobs = {"a": _blob("a", **{"containerd.io/gc.root": "1", f"{REF}.x": "b",
                                f"{REF}x": "c",  # not a name: ignored, as containerd does
                                "containerd.io/gc.ref.snapshot.overlayfs/1": "s2"}),
             "b": _blob("b"), "c": _blob("c"),
             "d": _blob("d", **{"containerd.io/gc.bref.content": "b"})}
    snaps = {"overlayfs": {"s1": cm.SnapshotRecord("overlayfs", "s1", "t/1/s1", None, {}),
                           "s2": cm.SnapshotRecord("overlayfs", "s2", "t/2/s2", "s1", {})}}
    got = gc.reachable(_ns(blobs=blobs, snapshots=snaps), NOW)
    assert got == {("content", "a"), ("content", "b"), ("content", "d"),
                   ("snapshot", "overlayfs/s2"), ("snapshot", "overlayfs/s1")}


def test_gc_images_ingests_containers() -> None:
    target = cm.Descriptor("m", OCI_MANIFEST, 1)
    images = {"old": cm.ImageRecord("old", target, None, None,
                                    {"containerd.io/gc.expire": "2026-01-01T00:00:00+01:00"}),
              "new": cm.ImageRecord("new", cm.Descriptor("n", OCI_MANIFEST, 1), None, None, {})}
    later = (NOW + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ingests = {"i": cm.IngestRecord("i", "e", "t/1/i", later),
               "j": cm.IngestRecord("j", "f", "t/2/j", "2020-01-01T00:00:00Z")}
    containers = {"c": cm.ContainerRecord("c", "new", "native", "ck", {f"{REF}.k": "k"})}
    got = gc.reachable(_ns(images=images, ingests=ingests, containers=containers), NOW)
    assert got == {("image", "new"), ("content", "n"), ("ingest", "i"), ("content", "e"),
                   ("container", "c"), ("snapshot", "native/ck"), ("content", "k")}


def test_rfc3339() -> None:
    assert gc.parse_time("2026-12-08T23:24:31Z") == datetime(2026, 12, 8, 23, 24, 31,
                                                             tzinfo=timezone.utc)
    assert gc.parse_time("2026-12-09T01:24:31.123456789+02:00") == datetime(
        2026, 12, 8, 23, 24, 31, 123456, tzinfo=timezone.utc)
    assert gc.parse_time("2026-13-01T00:00:00Z") is None
    assert gc.parse_time("yesterday") is None
