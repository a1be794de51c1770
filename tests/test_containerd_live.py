"""The containerd reader judged by a real containerd (Debian's 1.6) and by what a live
containerd answered when the fixture was made (``expected-A.json``).

Every live test runs its own containerd on a copy of a fixture root (``containerd_daemon``):
``ctr`` and the reader must list the same namespaces, image records (names, targets, media
types, labels, ctr's size and platforms), blobs (digests, exact sizes, labels), snapshots
(keys, parents, kinds, usage, labels), containers and leases. Then the reader is run beside
the daemon while it writes: changes made with ``ctr`` between two reads are seen by the
second, and a read racing a stream of commits returns a consistent tree or ``TornRead``,
without ever taking containerd's lock.

Root C was written by containerd 2.3.3 (``meta.db`` version 4); containerd 1.6 opens it
as it is (its migrations only run forward, and none is newer than 4), so it is judged live
too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from containerd_daemon import EXPECTED_A, ROOT_A, ROOT_C, Containerd, unpack

from imagestore.containerd import content as c
from imagestore.containerd import images, meta, snapshotter
from imagestore.containerd.layout import Layout
from imagestore.moby import bbolt

ROOTS = {"A": (ROOT_A, "containerd"), "C": (ROOT_C, "ctd-root")}


# -- how ctr prints sizes ------------------------------------------------------------------

def _scaled(size: float, base: float, units: list[str]) -> tuple[float, str]:
    """go-units getSizeAndUnit."""
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def human_size(n: int) -> str:
    """go-units ``HumanSize`` (``ctr content ls``): 4 significant digits, powers of 1000."""
    size, unit = _scaled(float(n), 1000.0, ["B", "kB", "MB", "GB", "TB", "PB", "EB"])
    return f"{size:.4g}{unit}"


def progress_bytes(n: int) -> str:
    """containerd's ``progress.Bytes`` (``ctr images ls``): ``%02.1f`` in powers of 1024."""
    size, unit = _scaled(float(n), 1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"])
    return "%02.1f %s" % (size, unit)  # noqa: UP031 (Go's format, kept verbatim)


def label_pieces(labels: dict[str, str]) -> list[str]:
    """``ctr content ls`` joins ``k=v`` pairs with commas in map order; values may hold
    commas themselves, so both sides are compared as the sorted comma-separated pieces."""
    if not labels:
        return ["-"]
    return sorted(",".join(f"{k}={v}" for k, v in labels.items()).split(","))


# -- the reader's view ---------------------------------------------------------------------

@dataclass
class Reading:
    layout: Layout
    meta: meta.Meta
    backends: dict[str, dict[str, snapshotter.Snapshot]]  # snapshotter -> backend name -> …

    def images(self, ns: str, wanted: c.Platform | None = None) -> dict[str, images.Image]:
        """Each target digest's resolved image."""
        resolved = images.resolve(self.layout, self.meta.namespaces[ns], self.backends, wanted)
        return {image.id: image for image in resolved}


def read(root: Path) -> Reading:
    layout = Layout(root)
    backends = {name: snapshotter.read(layout.snapshotter_db(name))[0]
                for name in layout.snapshotters()}
    return Reading(layout, meta.read(layout.meta), backends)


def ctr_size(image: images.Image) -> int | None:
    """What ``ctr images ls`` sums (images.Image.Size with platforms.Default(), limited to
    one manifest): the index blobs walked, the best manifest, its config and layers, by
    the sizes their descriptors give."""
    best = image.best
    if best is None:
        return None
    total = sum(d.size for d in image.indexes) + best.size
    if best.config is not None:
        total += best.config.size
    return total + sum(layer.size for layer in best.layers)


def ctr_platforms(image: images.Image) -> list[str]:
    """What ``ctr images ls`` shows (images.Platforms): every index entry's platform as
    written, and os/arch (normalized, no variant) from the config of a manifest target."""
    out = set()
    for m in image.manifests:
        if m.platform is None:
            continue
        if m.digest == image.target.digest:
            p = c.normalize(c.Platform(m.platform.os, m.platform.architecture))
            out.add(f"{p.os}/{p.architecture}")
        else:
            out.add(str(m.platform))
    return sorted(out)


def snapshot_view(reading: Reading, ns: str, name: str) -> dict[str, tuple[str | None, str]]:
    """key -> (parent key, kind) from meta.db's record and the snapshotter's own file."""
    backend = reading.backends.get(name, {})
    out = {}
    for key, rec in reading.meta.namespaces[ns].snapshots.get(name, {}).items():
        snap = backend.get(rec.backend)
        out[key] = (rec.parent, snap.kind if snap else "absent from the snapshotter")
    return out


# -- ctr's view ----------------------------------------------------------------------------

def ctr_images(d: Containerd, ns: str) -> dict[str, dict[str, Any]]:
    out = {}
    for line in d.ctr("images", "ls", namespace=ns).stdout.splitlines()[1:]:
        name, media, digest, number, unit, plats, labels = line.split(None, 6)
        out[name] = {"digest": digest, "mediaType": media, "size": f"{number} {unit}",
                     "platforms": [] if plats == "-" else plats.split(","),
                     "labels": labels.rstrip()}
    return out


def ctr_content(d: Containerd, ns: str) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for line in d.ctr("content", "ls", namespace=ns).stdout.splitlines()[1:]:
        digest, size, _age, labels = [f for f in line.split("\t") if f]
        out[digest] = (size, sorted(labels.split(",")))
    return out


def ctr_snapshots(d: Containerd, ns: str, name: str) -> dict[str, tuple[str | None, str]]:
    out = {}
    for line in d.ctr("snapshots", "--snapshotter", name, "ls",
                      namespace=ns).stdout.splitlines()[1:]:
        fields = line.split()
        key, kind = fields[0], fields[-1]
        out[key] = (fields[1] if len(fields) == 3 else None, kind.lower())
    return out


def ctr_usage(d: Containerd, ns: str, name: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in d.ctr("snapshots", "--snapshotter", name, "usage", "-b",
                      namespace=ns).stdout.splitlines()[1:]:
        key, size, inodes = line.split()
        out[key] = (int(size), int(inodes))
    return out


def quiet(d: Containerd, ns: str, *what: str) -> set[str]:
    return set(d.ctr(*what, "ls", "-q", namespace=ns).stdout.split())


# -- the judgement -------------------------------------------------------------------------

def assert_agrees(d: Containerd, root: Path) -> Reading:
    """Everything ctr lists about every namespace equals what the reader reads from the
    live root, asked while the root does not change (meta.db's txid is the same before
    and after; a round during which containerd committed by itself, e.g. a scheduled
    garbage collection, is asked again). Returns the reading."""
    meta_db = Layout(root).meta
    for _ in range(3):
        before = meta.read(meta_db).txid
        try:
            reading = _compare(d, root)
        except AssertionError:
            if meta.read(meta_db).txid == before:
                raise
            continue
        if reading.meta.txid == before == meta.read(meta_db).txid:
            return reading
    pytest.fail("containerd kept committing while ctr was asked (3 rounds)")


def _compare(d: Containerd, root: Path) -> Reading:
    layout = Layout(root)
    reading = read(root)
    namespaces = sorted(d.ctr("namespaces", "ls", "-q").stdout.split())
    assert sorted(reading.meta.namespaces) == namespaces
    loaded = d.snapshotters()
    for ns in namespaces:
        space = reading.meta.namespaces[ns]
        assert not space.problems, (ns, space.problems)
        resolved = reading.images(ns)

        # images: name, target, media type, labels; ctr's size and platforms
        theirs = ctr_images(d, ns)
        ours = {}
        for name, rec in space.images.items():
            image = resolved[rec.target.digest]
            size = ctr_size(image)
            ours[name] = {"digest": rec.target.digest, "mediaType": rec.target.media_type,
                          "size": progress_bytes(size) if size is not None else None,
                          "platforms": ctr_platforms(image),
                          "labels": ",".join(sorted(f"{k}={v}" for k, v in rec.labels.items()))
                          or "-"}
        assert ours == theirs, ns

        # content: digests, sizes (ctr's rounding, then exact), labels
        blobs = ctr_content(d, ns)
        assert {dg: (human_size(b.size), label_pieces(b.labels))
                for dg, b in space.blobs.items()} == blobs, ns
        exact = {dg: len(d.ctr_bytes("content", "get", dg, namespace=ns)) for dg in blobs}
        assert {dg: b.size for dg, b in space.blobs.items()} == exact, ns
        assert {dg: c.blob_size(layout, dg) for dg in blobs} == exact, ns
        for name, rec in space.images.items():  # a target's record size is its blob's
            if rec.target.digest in exact:
                assert rec.target.size == exact[rec.target.digest], (ns, name)

        # snapshots, per snapshotter the daemon runs or the root has
        names = set(space.snapshots) | set(reading.backends) | {"overlayfs", "native"}
        missing = sorted(n for n in names if n not in loaded and space.snapshots.get(n))
        assert not missing, f"containerd here did not load the snapshotter(s) {missing}"
        for name in sorted(names & set(loaded)):
            view = snapshot_view(reading, ns, name)
            assert view == ctr_snapshots(d, ns, name), (ns, name)
            usage = ctr_usage(d, ns, name)
            backend = reading.backends.get(name, {})
            for key, srec in space.snapshots.get(name, {}).items():
                snap = backend[srec.backend]
                if srec.parent is not None:  # the backend chain follows the meta chain
                    assert snap.parent == space.snapshots[name][srec.parent].backend
                if snap.kind == "committed":  # an active one's usage is measured live
                    assert (snap.size, snap.inodes) == usage[key], (ns, name, key)
                info = d.ctr_json("snapshots", "--snapshotter", name, "info", key,
                                  namespace=ns)
                assert (info["Name"], info.get("Parent"), info["Kind"].lower(),
                        info.get("Labels") or {}) == \
                    (key, srec.parent, snap.kind, srec.labels), (ns, name, key)

        # containers and leases
        assert set(space.containers) == quiet(d, ns, "containers"), ns
        for cid, crec in space.containers.items():
            info = d.ctr_json("containers", "info", cid, namespace=ns)
            assert (info["Image"], info["Snapshotter"], info["SnapshotKey"]) == \
                (crec.image, crec.snapshotter, crec.snapshot_key), (ns, cid)
        assert set(space.leases) == quiet(d, ns, "leases"), ns
    return reading


# -- fixtures ------------------------------------------------------------------------------

def _running(archive: Path, member: str, folder: Path) -> Iterator[tuple[Containerd, Path]]:
    root = unpack(archive, folder, member)
    d = Containerd(root)
    try:
        yield d.start(), root
    finally:
        d.stop()
        # shown by pytest only when the test failed: what containerd did meanwhile
        print("containerd's log (end):\n" + "\n".join(d.log_text().splitlines()[-80:]))


@pytest.fixture(params=sorted(ROOTS))
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Containerd, Path]]:
    yield from _running(*ROOTS[request.param], tmp_path / "copy")


@pytest.fixture
def live_a(tmp_path: Path) -> Iterator[tuple[Containerd, Path]]:
    yield from _running(ROOT_A, "containerd", tmp_path / "copy")


# -- without a daemon: the fixture's recorded truth ----------------------------------------

EXPECTED: dict[str, Any] = json.loads(EXPECTED_A.read_text())
NAMESPACES_A = sorted(EXPECTED["namespaces"])


@pytest.fixture(scope="module")
def reading_a(tmp_path_factory: pytest.TempPathFactory) -> Reading:
    return read(unpack(ROOT_A, tmp_path_factory.mktemp("expected-a"), "containerd"))


def _fixture_platform() -> c.Platform:
    """The platform the fixture's containerd ran on: the one every derived entry names."""
    found = {i["derived"]["platform"] for ns in EXPECTED["namespaces"].values()
             for i in ns["images"] if "platform" in i["derived"]}
    assert len(found) == 1, found
    return c.parse_platform(found.pop())


def test_expected_a_namespaces(reading_a: Reading) -> None:
    assert sorted(reading_a.meta.namespaces) == NAMESPACES_A
    assert reading_a.meta.version == 3  # containerd 1.6 wrote it


@pytest.mark.parametrize("ns", NAMESPACES_A)
def test_expected_a_records(reading_a: Reading, ns: str) -> None:
    """Image records, blobs, snapshots, containers and leases as the live daemon listed."""
    want = EXPECTED["namespaces"][ns]
    space = reading_a.meta.namespaces[ns]
    assert not space.problems
    assert {i["name"]: (i["target"], i["labels"]) for i in want["images"]} == \
        {name: ({"digest": r.target.digest, "mediaType": r.target.media_type,
                 "size": r.target.size}, r.labels) for name, r in space.images.items()}
    assert {b["digest"]: (b["size"], human_size(b["size"]), b["labels"])
            for b in want["content"]} == \
        {dg: (b.size, human_size(b.size), b.labels) for dg, b in space.blobs.items()}
    assert {b["digest"]: b["ctr_size"] for b in want["content"]} == \
        {dg: human_size(b.size) for dg, b in space.blobs.items()}
    for name in set(want["snapshots"]) | set(space.snapshots):
        assert {s["Name"]: (s.get("Parent"), s["Kind"].lower(), s.get("Labels") or {})
                for s in want["snapshots"].get(name, [])} == \
            {key: (*snapshot_view(reading_a, ns, name)[key], rec.labels)
             for key, rec in space.snapshots.get(name, {}).items()}, name
    assert {x["ID"]: (x["Image"], x["Snapshotter"], x["SnapshotKey"])
            for x in want["containers"]} == \
        {cid: (r.image, r.snapshotter, r.snapshot_key) for cid, r in space.containers.items()}
    assert sorted(x["id"] for x in want["leases"]) == space.leases


@pytest.mark.parametrize("ns", NAMESPACES_A)
def test_expected_a_resolved(reading_a: Reading, ns: str) -> None:
    """images.resolve's best manifest, for the platform the fixture was made on: config
    digest, diff IDs, chain IDs, layers, created, config labels; and ctr's size and
    platforms from the walk."""
    wanted = _fixture_platform()
    resolved = reading_a.images(ns, wanted)
    for want in EXPECTED["namespaces"][ns]["images"]:
        image = resolved[want["target"]["digest"]]
        where = f"{ns} {want['name']}"
        size = ctr_size(image)
        assert size is not None and progress_bytes(size) == want["ctr_total_size"], where
        assert ctr_platforms(image) == want["platforms"], where
        derived = want["derived"]
        walked = {(m.digest, m.media_type, m.size): (m.platform.as_dict() if m.platform
                                                     else None, m.annotations)
                  for m in image.manifests}
        walked.update({(i.digest, i.media_type, i.size): (None, i.annotations)
                       for i in image.indexes[1:]})
        for entry in derived.get("manifests", []):
            key = (entry["digest"], entry["mediaType"], entry["size"])
            assert key in walked, (where, key)
            platform, notes = walked[key]
            if entry["platform"] is not None:
                assert platform == entry["platform"], (where, key)
            if entry["mediaType"] in c.MANIFESTS:  # an index's annotations are its own
                assert notes == (entry["annotations"] or {}), (where, key)
        if "config_digest" not in derived:
            continue  # a nested index: the fixture records no derived manifest for it
        best = image.best
        assert best is not None, where
        assert best.config is not None and best.config.digest == derived["config_digest"]
        assert str(best.platform) == derived["platform"], where
        if "host_manifest" in derived:
            assert best.digest == derived["host_manifest"], where
        else:
            assert best.digest == want["target"]["digest"], where
        assert [layer.diff_id for layer in best.layers] == derived["diff_ids"], where
        assert [layer.chain_id for layer in best.layers] == derived["chain_ids"], where
        assert images.chain_ids(derived["diff_ids"]) == derived["chain_ids"], where
        assert [{"digest": x.digest, "mediaType": x.media_type, "present": x.present,
                 "size": x.size} for x in best.layers] == derived["layers"], where
        cfg = best.config_json()
        assert cfg.get("created") == derived["created"], where
        assert (cfg.get("config") or {}).get("Labels") == derived["config_labels"], where


# -- live: the reader beside a running containerd ------------------------------------------

def test_live_agrees_with_ctr(live: tuple[Containerd, Path]) -> None:
    """Every namespace of the live root, as ctr lists it and as the reader reads it."""
    d, root = live
    reading = assert_agrees(d, root)
    assert reading.meta.namespaces and any(ns.images for ns in reading.meta.namespaces.values())
    assert d.alive()


def _lock_is_containerds(d: Containerd, path: Path) -> None:
    """containerd holds meta.db's flock, and no one else does (the reader never locks)."""
    assert d.lock_holders(path) == {d.pid}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_live_changes_are_seen(live_a: tuple[Containerd, Path]) -> None:
    """Tag, label, content writes and removals made with ctr between two reads are in the
    second read, and the reader reads while containerd holds its lock."""
    d, root = live_a
    layout = Layout(root)
    ns = "moby"
    _lock_is_containerds(d, layout.meta)
    start = time.monotonic()
    m0 = meta.read(layout.meta)
    assert time.monotonic() - start < 30  # it did not wait on the lock
    source = m0.namespaces[ns].images["docker.io/library/app:1"]

    # a tag
    new = "example.com/live/app:tagged"
    d.ctr("images", "tag", source.name, new, namespace=ns)
    m1 = meta.read(layout.meta)
    assert new not in m0.namespaces[ns].images and m1.txid > m0.txid
    rec = m1.namespaces[ns].images[new]
    assert rec.target == source.target and rec.created is not None
    assert rec.labels == source.labels  # ctr's tag copies the record, labels included

    # a label on it
    d.ctr("images", "label", new, "com.example.live=yes", namespace=ns)
    m2 = meta.read(layout.meta)
    assert m2.namespaces[ns].images[new].labels == {**source.labels, "com.example.live": "yes"}
    assert m2.namespaces[ns].images[source.name].labels == source.labels

    # a blob written (referenced beforehand from the image's manifest, so no collection
    # can take it before it is labelled), labelled, then removed
    data = b"imagestore: a blob written through ctr while the reader watches\n"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    holder = f"containerd.io/gc.ref.content.imagestore={digest}"
    d.ctr("content", "label", source.target.digest, holder, namespace=ns)
    d.ctr("content", "ingest", "--expected-size", str(len(data)), "--expected-digest",
          digest, "imagestore-live-test", namespace=ns, input=data)
    d.ctr("content", "label", digest, "com.example.k=v", namespace=ns)
    m3 = meta.read(layout.meta)
    blob = m3.namespaces[ns].blobs[digest]
    assert (blob.size, blob.labels) == (len(data), {"com.example.k": "v"})
    assert m3.namespaces[ns].blobs[source.target.digest].labels == {
        **m2.namespaces[ns].blobs[source.target.digest].labels,
        "containerd.io/gc.ref.content.imagestore": digest}
    assert c.read_blob(layout, digest) == data
    assert digest not in m3.namespaces["default"].blobs  # records are per namespace
    d.ctr("content", "rm", digest, namespace=ns)
    m4 = meta.read(layout.meta)
    assert digest not in m4.namespaces[ns].blobs

    # an image removed, and what only it kept collected (rm --sync waits for the GC)
    gone = "localhost:5000/multi/arch:1.0"
    before = read(root)
    d.ctr("images", "rm", "--sync", gone, new, namespace=ns)
    after = assert_agrees(d, root)
    space0, space1 = before.meta.namespaces[ns], after.meta.namespaces[ns]
    assert gone not in space1.images and new not in space1.images
    target = space0.images[gone].target.digest
    assert target in space0.blobs and target not in space1.blobs
    assert set(space1.blobs) < set(space0.blobs)
    lost = set(space0.snapshots["overlayfs"]) - set(space1.snapshots["overlayfs"])
    assert lost, "the removed image's snapshots were collected"
    for key in lost:  # gone from the snapshotter's own file too
        assert space0.snapshots["overlayfs"][key].backend not in after.backends["overlayfs"]
    # content records are per namespace, files are shared: default still has its copy
    assert target in after.meta.namespaces["default"].blobs
    assert c.read_blob(layout, target)
    _lock_is_containerds(d, layout.meta)


TAGS = 200
PREFIX = "stress.example/tag:"


def test_live_reads_race_commits(live_a: tuple[Containerd, Path],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread tags one image many times with ctr (one commit each) while the main thread
    reads meta.db in a loop: each read is a consistent tree (every record has a target,
    the tags seen are exactly the first k made, k never goes back) or TornRead; containerd
    keeps its lock and keeps serving."""
    d, root = live_a
    layout = Layout(root)
    ns = "moby"
    source = meta.read(layout.meta).namespaces[ns].images["docker.io/library/app:1"]

    attempts = 0
    real = bbolt.read_with_txid

    def counted(path: str | os.PathLike[str], skip: bbolt.Skip | None = None
                ) -> tuple[bbolt.Bucket, int]:
        nonlocal attempts
        attempts += 1
        return real(path, skip)

    monkeypatch.setattr(bbolt, "read_with_txid", counted)

    failures: list[BaseException] = []

    def tagger() -> None:
        try:
            for i in range(TAGS):
                d.ctr("images", "tag", source.name, f"{PREFIX}{i:04d}", namespace=ns)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=tagger, name="ctr-tagger")
    reads = torn = 0
    seen: list[int] = []
    last_txid = 0
    deadline = time.monotonic() + 300
    thread.start()
    try:
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                m = meta.read(layout.meta, {ns})
            except meta.TornRead:
                torn += 1
                continue
            reads += 1
            space = m.namespaces[ns]
            assert not space.problems
            for name, rec in space.images.items():
                assert rec.target.digest and rec.target.media_type and rec.target.size > 0, \
                    name
            tags = sorted(int(n[len(PREFIX):]) for n in space.images if n.startswith(PREFIX))
            assert tags == list(range(len(tags))), "a read saw tags out of order"
            assert all(space.images[f"{PREFIX}{i:04d}"].target == source.target for i in tags)
            assert not seen or len(tags) >= seen[-1], "a later read saw fewer tags"
            assert m.txid >= last_txid
            seen.append(len(tags))
            last_txid = m.txid
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive(), "the tagging thread hung"
    assert not failures, failures
    assert time.monotonic() < deadline, "the tags took more than 300 s"

    final = meta.read(layout.meta, {ns}).namespaces[ns]
    assert sorted(n for n in final.images if n.startswith(PREFIX)) == \
        [f"{PREFIX}{i:04d}" for i in range(TAGS)]
    assert len([k for k in set(seen) if 0 < k < TAGS]) >= 2, \
        f"the reads did not overlap the writes ({reads} reads saw {sorted(set(seen))})"
    assert d.alive()
    _lock_is_containerds(d, layout.meta)
    assert set(d.ctr("images", "ls", "-q", namespace=ns).stdout.split()) == set(final.images)
    print(f"\n{reads} consistent reads, {torn} TornRead, {attempts} attempts "
          f"({attempts - reads - torn * meta.TRIES} retried), over {TAGS} commits")


def test_the_next_command_sees_what_ctr_did(live_a: tuple[Containerd, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Beside the live containerd: ``imagestore ls`` (warm, through the quick index) sees a
    tag ``ctr`` made and then its removal, and nothing under the root is written."""
    from cli_helpers import run_cli

    d, root = live_a
    index = tmp_path / "index.sqlite"

    def tags() -> set[tuple[str, str]]:
        got = run_cli(capsys, root, "ls", "--json", index=index)
        assert got.code == 0, got.err
        return {(r["repository"], r["tag"]) for r in got.json() if r["tag"]}

    first = tags()
    assert ("app", "1") in first and ("example.com/live/app", "next") not in first
    assert tags() == first  # warm: nothing changed, nothing re-read
    d.ctr("images", "tag", "docker.io/library/app:1", "example.com/live/app:next",
          namespace="moby")
    assert tags() == first | {("example.com/live/app", "next")}
    d.ctr("images", "rm", "example.com/live/app:next", namespace="moby")
    assert tags() == first
    assert d.alive()
