"""containerd's image store read offline: imagestore's cold sync and warm open of a namespace
against plain-Python floors measured in the same run.

    python -m bench.containerd [--sizes 1000,10000] [--repeat 5] [--workdir DIR] [--profile]
                               [--no-write]
    (also ``python -m bench containerd …``)

For each size N, a containerd root holding N images in namespace ``moby`` is made once by
Debian's containerd and cached in the workdir (WORKDIR/ctd-N/root, with built.json): an OCI
archive is written here (``index.json`` naming N manifests, each with its own config and its
own small gzip layer on top of one of ``BASES`` shared uncompressed base layers; every
``ALIAS_EVERY``-th image has a second name), then a containerd with a private config (its own
root, state and sockets, the CRI plugin off) runs ``ctr -n moby images import`` in batches of
``BATCH`` images, unpacking to overlayfs (``native`` when overlayfs cannot mount here). It
imports on a tmpfs when there is one (containerd fsyncs every blob and every commit); the
root is copied into the workdir (``cp -a``) and a second containerd started on the copy must
list every name (``ctr images ls``) and every unpacked layer (``ctr snapshots ls``): the root
is what a real containerd wrote and reads back. Both daemons are always stopped and reaped.

Measured in one run, each the best of ``--repeat`` warm-cache runs (the floors of at least 7):

* *floor*: plain Python reading every record — ``imagestore.moby.bbolt.read`` of ``meta.db``
  and of each snapshotter's ``metadata.db`` — and every manifest and config blob of every
  image (``open().read()`` and ``json.loads``), walked from the image records' targets;
* *cold sync*: ``imagestore.open(root, fresh_index, namespace="moby")`` in a fresh process
  (everything it imports loaded before the clock starts), then closed;
* *warm open*: the same open again with nothing changed (its freshness check only), in a
  fresh process;
* *stat floor*: what the freshness check cannot do without, in a plain loop: ``os.stat`` of
  ``meta.db``, each snapshotter's ``metadata.db``, the blob and ingest folders, and reading
  ``meta.db``'s two meta pages; *index floor*: the same plus reading the stored signature
  back through a plain ``sqlite3`` connection (a warm open must compare against something);
* the cold sync's steps (``sync.containerd``'s functions wrapped where it calls them), and
  ``open(..., sync=False)`` on a new index (making the index alone).

It prints a table and, unless ``--no-write``, puts it in docs/benchmarks.md (its own section,
between markers) and the plot in docs/benchmarks-containerd.png (matplotlib, the ``bench``
extra). ``--profile``: cProfile of one cold sync and one warm open per size (stderr and
WORKDIR/profile-N.txt).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gzip
import hashlib
import io
import json
import os
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.docs import write_section
from bench.run import best_time as best

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
PNG = "benchmarks-containerd.png"
BEGIN = "<!-- containerd-results:begin (written by python -m bench.containerd) -->"
END = "<!-- containerd-results:end -->"
HEADING = "## containerd's image store: cold sync and warm open"
NAMESPACE = "moby"
BASES = 16  # shared base layers
ALIAS_EVERY = 20  # every 20th image also has a ``:latest`` name
BATCH = 2000  # images per ``ctr images import``
EPOCH = 1_700_000_000
META_DB = Path("io.containerd.metadata.v1.bolt") / "meta.db"
CONTENT = Path("io.containerd.content.v1.content")
SNAPSHOTTER = "io.containerd.snapshotter.v1."
TARGET_COLD = 1.5
TARGET_WARM = 1.5
FLOOR_META = "floor: meta.db records (bbolt.read)"
FLOOR_SNAPS = "floor: snapshotter records (bbolt.read)"
FLOOR_DOCS = "floor: manifests and configs (open, json.loads)"
NEW_INDEX = "new index, nothing read (sync=False)"
PLOTTED = ("floor", "cold sync", "warm open", "warm open (command line)", "fresh() alone",
           "stat floor", "index floor",
           "new index, nothing read (sync=False)")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


# -- the images ----------------------------------------------------------------------------
def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def image_name(i: int) -> str:
    """Ten tags per repository, as a registry's images are named."""
    return f"registry.example.com/bench/app{i // 10:04d}:v{i % 10}"


def alias_name(i: int) -> str:
    return f"registry.example.com/bench/app{i // 10:04d}:latest"


class Archive:
    """An OCI image layout written as a tar stream (what ``ctr images import`` reads)."""

    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.written: set[str] = set()
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        if digest not in self.written:
            self.written.add(digest)
            info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o444
            self.tar.addfile(info, io.BytesIO(data))
        return digest

    def close(self) -> None:
        for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                 "manifests": self.entries}))):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            self.tar.addfile(info, io.BytesIO(data))
        self.tar.close()


def base_layer(k: int) -> bytes:
    return _tar({f"etc/base-{k}/os-release": f"ID=bench\nBASE={k}\n".encode() * 8,
                 f"usr/lib/base-{k}/data": hashlib.sha256(str(k).encode()).digest() * 64})


def add_image(archive: Archive, i: int) -> None:
    base = base_layer(i % BASES)
    own = _tar({f"app/{i}/main.txt": f"image {i}\n".encode(),
                f"app/{i}/config.json": _json({"image": i, "name": image_name(i)})})
    own_gz = gzip.compress(own, compresslevel=6, mtime=0)
    diff_ids = [_sha(base), _sha(own)]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH + i * 60))
    config = _json({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           f"APP_INDEX={i}"],
                   "Cmd": ["/app/run", "--serve"], "WorkingDir": f"/app/{i}",
                   "Labels": {"org.opencontainers.image.title": f"app {i}",
                              "bench.index": str(i)}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"ADD base-{i % BASES}"},
                    {"created": created, "created_by": f"COPY app/{i} /app/{i}"}],
    })
    layers = [{"mediaType": OCI_LAYER, "digest": archive.blob(base), "size": len(base)},
              {"mediaType": OCI_LAYER_GZIP, "digest": archive.blob(own_gz),
               "size": len(own_gz)}]
    manifest = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": archive.blob(config),
                                 "size": len(config)},
                      "layers": layers})
    desc = {"mediaType": OCI_MANIFEST, "digest": archive.blob(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"}}
    names = [image_name(i)] + ([alias_name(i)] if i % ALIAS_EVERY == 0 else [])
    for name in names:
        archive.entries.append({**desc, "annotations": {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}})


# -- a private containerd ------------------------------------------------------------------
def _toml(value: str) -> str:
    return json.dumps(value)


class Containerd:
    """Debian's containerd on ``root`` with a private config; its state, config, log and
    sockets in a temporary folder of its own (short: the sockets' 108-byte limit). Always
    stopped and reaped on leaving the ``with`` block."""

    DISABLED = ("io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.aufs")

    def __init__(self, root: Path) -> None:
        for tool in ("containerd", "ctr"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not installed (apt-get install containerd)")
        self.root = root.resolve()
        self.run_dir = Path(tempfile.mkdtemp(prefix="is-bctd-"))
        self.address = self.run_dir / "c.sock"
        self.log = self.run_dir / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Containerd:
        config = self.run_dir / "config.toml"
        config.write_text("\n".join([
            "version = 2",
            f"root = {_toml(str(self.root))}",
            f"state = {_toml(str(self.run_dir / 'state'))}",
            f"disabled_plugins = [{', '.join(_toml(p) for p in self.DISABLED)}]",
            "[grpc]", f"  address = {_toml(str(self.address))}",
            "[ttrpc]", f"  address = {_toml(str(self.run_dir / 't.sock'))}",
            "[debug]", f"  address = {_toml(str(self.run_dir / 'd.sock'))}",
            "[metrics]", '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml(str(self.run_dir / 'opt'))}", ""]))
        try:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(["containerd", "--config", str(config)],
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=self.env())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"containerd exited at start:\n{self.tail()}")
                if self.address.exists() and self.ctr("version", check=False).returncode == 0:
                    return self
                time.sleep(0.05)
            raise RuntimeError(f"containerd did not answer within 60 s:\n{self.tail()}")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
        return ""

    @staticmethod
    def env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}

    def ctr(self, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "--address", str(self.address), "--namespace", NAMESPACE, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self.env(), stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip()}\n{self.tail()}")
        return done

    def version(self) -> str:
        return subprocess.run(["containerd", "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _scratch(workdir: Path) -> Path:
    """Where containerd imports: a tmpfs when there is one (containerd fsyncs every blob
    and every bbolt commit, which a virtual disk makes take minutes), else the workdir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        return Path(tempfile.mkdtemp(prefix="imagestore-ctd-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="import-", dir=workdir))


def _verify(d: Containerd, n: int, snapshotter: str) -> tuple[int, int]:
    """Every name and every unpacked layer, as containerd lists them."""
    listed = d.ctr("images", "ls", "-q", timeout=600).stdout.split()
    snaps = d.ctr("snapshots", "--snapshotter", snapshotter, "ls",
                  timeout=600).stdout.splitlines()[1:]
    committed = sum(1 for line in snaps if "Committed" in line)
    want = {image_name(i) for i in range(n)} | {alias_name(i) for i in range(0, n, ALIAS_EVERY)}
    if set(listed) != want:
        raise RuntimeError(f"containerd lists {len(listed)} names, {len(want)} were imported")
    if committed != n + min(n, BASES):
        raise RuntimeError(f"{committed} committed snapshots, expected {n + min(n, BASES)}")
    return len(listed), committed


def build_root(workdir: Path, n: int) -> tuple[Path, dict[str, Any]]:
    """The containerd root of N images (made unless cached) and how it was made: imported
    by containerd in a scratch folder, copied into the workdir (``cp -a``), and read back
    there by a second containerd."""
    target = workdir / f"ctd-{n}"
    done = target / "built.json"
    if done.exists():
        info: dict[str, Any] = json.loads(done.read_text())
        return target / "root", info
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    archives = []
    for lo in range(0, n, BATCH):
        path = target / f"images-{lo}.tar"
        archive = Archive(path)
        for i in range(lo, min(n, lo + BATCH)):
            add_image(archive, i)
        archive.close()
        archives.append(path)
    info = {"images": n, "names": n + len(range(0, n, ALIAS_EVERY)),
            "archive_seconds": round(time.perf_counter() - started, 1)}
    _say(f"  N = {n:,}: {len(archives)} archive(s) written in {info['archive_seconds']} s; "
         "importing …")
    scratch = _scratch(workdir)
    root = target / "root"
    try:
        started = time.perf_counter()
        with Containerd(scratch / "root") as d:
            info["containerd"] = d.version()
            snapshotter = "overlayfs"
            for k, path in enumerate(archives):
                args = ["images", "import", "--snapshotter", snapshotter, str(path)]
                result = d.ctr(*args, check=False, timeout=3600)
                if result.returncode != 0 and k == 0 and snapshotter == "overlayfs":
                    _say(f"  overlayfs failed ({result.stderr.strip()[-200:]}); using native")
                    snapshotter = args[3] = "native"
                    result = d.ctr(*args, check=False, timeout=3600)
                if result.returncode != 0:
                    raise RuntimeError(f"ctr images import {path.name}: "
                                       f"{result.stderr.strip()}\n{d.tail()}")
                _say(f"  imported batch {k + 1}/{len(archives)} "
                     f"({time.perf_counter() - started:.0f} s)")
            _verify(d, n, snapshotter)
        info["import_seconds"] = round(time.perf_counter() - started, 1)
        info["snapshotter"] = snapshotter
        info["imported_in"] = "tmpfs" if str(scratch).startswith("/dev/shm") else "workdir"
        subprocess.run(["cp", "-a", str(scratch / "root"), str(root)], check=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with Containerd(root) as d:  # read back where the benchmark reads it
        info["listed_names"], info["committed_snapshots"] = _verify(d, n, snapshotter)
    for path in archives:
        path.unlink()
    done.write_text(json.dumps(info, indent=1))
    return root, info


# -- the floors ------------------------------------------------------------------------------
def snapshotter_dbs(root: Path) -> list[Path]:
    return sorted(p / "metadata.db" for p in root.iterdir()
                  if p.name.startswith(SNAPSHOTTER) and (p / "metadata.db").is_file())


def floor(root: Path, digest: bool = False, split: dict[str, float] | None = None) -> int:
    """Plain Python reading every record (``meta.db`` and each snapshotter's ``metadata.db``
    whole) and every manifest and config of every image record (``open``, ``json.loads``;
    ``digest``: also sha256 of each). Returns the documents read; ``split`` gets the
    seconds of its three parts."""
    from imagestore.moby import bbolt

    start = time.perf_counter()
    tree = bbolt.read(root / META_DB)
    read_meta = time.perf_counter()
    for db in snapshotter_dbs(root):
        bbolt.read(db)
    read_snaps = time.perf_counter()
    v1 = tree.bucket(b"v1")
    ns = v1.bucket(NAMESPACE.encode()) if v1 else None
    images = ns.bucket(b"images") if ns else None
    blobs = f"{root}/{CONTENT}/blobs/sha256/"
    seen: set[str] = set()

    def load(d: str) -> Any:
        with open(blobs + d[7:], "rb") as f:
            data = f.read()
        if digest:
            hashlib.sha256(data).hexdigest()
        return json.loads(data)

    for rec in (images or {}).values():
        target = rec.bucket(b"target") if isinstance(rec, bbolt.Bucket) else None
        value = target.value(b"digest") if target else None
        if value is None or value.decode() in seen:
            continue
        seen.add(value.decode())
        config = load(value.decode())["config"]["digest"]
        if config not in seen:
            seen.add(config)
            load(config)
    if split is not None:
        split.update({FLOOR_META: read_meta - start, FLOOR_SNAPS: read_snaps - read_meta,
                      FLOOR_DOCS: time.perf_counter() - read_snaps})
    return len(seen)


def stat_floor(root: Path, dbs: list[Path]) -> None:
    """The stats and reads a freshness check cannot do without, in a plain loop."""
    meta = f"{root}/{META_DB}"
    os.stat(meta)
    for db in dbs:
        os.stat(db)
    os.stat(f"{root}/{CONTENT}/blobs/sha256")
    os.stat(f"{root}/{CONTENT}/ingest")
    fd = os.open(meta, os.O_RDONLY)
    try:
        os.pread(fd, 64, 16)  # the two meta pages (page size 4096)
        os.pread(fd, 64, 4096 + 16)
    finally:
        os.close(fd)


def index_floor(root: Path, dbs: list[Path], index: Path) -> None:
    """The stat floor and the stored signature read back through plain sqlite3."""
    from imagestore.index.ctdread import SIGNATURE

    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        conn.execute("SELECT value FROM settings WHERE key = ?", (SIGNATURE,)).fetchone()
    finally:
        conn.close()
    stat_floor(root, dbs)


# -- imagestore, in a fresh process ------------------------------------------------------------
# The sync's steps, timed inside the real cold sync by wrapping them where ``sync.containerd``
# calls them (module, attribute, label); a step a later version renames is left out.
STEPS = (("imagestore.sync.containerd", "read_namespace", "meta.db read and decoded"),
         ("imagestore.sync.containerd", "snapshots", "snapshotter dbs read"),
         ("imagestore.containerd.images", "resolve", "manifests and configs resolved"),
         ("imagestore.sync.containerd", "build", "rows built"),
         ("imagestore.index.ctd", "replace", "rows written (SQL)"),
         ("imagestore.sync.containerd", "run", "sync.containerd.run, all of it"))


def _wrap(spent: dict[str, float]) -> None:
    import functools
    import importlib

    for module, attr, label in STEPS:
        owner = importlib.import_module(module)
        fn = getattr(owner, attr, None)
        if not callable(fn):
            continue

        def timed(*args: Any, _fn: Callable[..., Any] = fn, _label: str = label,
                  **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, attr, functools.wraps(fn)(timed))


def probe_main(root: str, index: str, mode: str) -> None:
    """``imagestore.open(root, index, namespace="moby")`` timed in this fresh process, with
    everything it imports loaded first; then the best of 20 ``fresh()`` checks. ``mode``:
    ``open``, or ``nosync`` (``sync=False``: on a new index, the index made and nothing read)."""
    import alembic.command
    import alembic.config
    import alembic.operations
    import alembic.runtime.environment
    import alembic.runtime.migration
    import alembic.script  # noqa: F401
    import sqlalchemy.dialects.sqlite  # noqa: F401

    import imagestore.containerd.images
    import imagestore.index.database
    import imagestore.sync.containerd
    from imagestore.opening import open as open_store
    from imagestore.service.ctdhost import ContainerdHost

    if mode == "index-floor":  # the floor of a warm open, the first time in a process too
        dbs = snapshotter_dbs(Path(root))
        start = time.perf_counter()
        index_floor(Path(root), dbs, Path(index))
        print(json.dumps({"seconds": time.perf_counter() - start}))
        return
    if mode == "quick":  # the warm path of every read command: sqlite3 alone, no engine
        import imagestore.index.quick
        import imagestore.service.ctdreading  # noqa: F401
        from imagestore.opening import open_quick

        start = time.perf_counter()
        reading = open_quick(root, index, namespace=NAMESPACE)
        seconds = time.perf_counter() - start
        assert reading is not None, "the quick path did not vouch for a fresh index"
        count = len(reading)
        reading.close()
        print(json.dumps({"seconds": seconds, "images": count}))
        return
    spent: dict[str, float] = {}
    _wrap(spent)
    before = set(sys.modules)
    start = time.perf_counter()
    store = open_store(root, index, namespace=NAMESPACE, sync=mode != "nosync")
    seconds = time.perf_counter() - start
    assert isinstance(store, ContainerdHost)
    late = sorted({m.split(".")[0] for m in set(sys.modules) - before})
    fresh = []
    ok = False
    for _ in range(20 if mode != "nosync" else 0):
        t = time.perf_counter()
        ok = store.fresh()
        fresh.append(time.perf_counter() - t)
    count = len(store)
    store.close()
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"seconds": seconds, "fresh": min(fresh, default=0.0), "was_fresh": ok,
                      "images": count, "rss_mb": rss, "steps": spent,
                      "imported_while_timed": late}))


def probe(root: Path, index: Path, mode: str = "open") -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.containerd", "probe", str(root),
                          str(index), mode], check=True, capture_output=True, text=True,
                         cwd=HERE.parent).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def drop_index(index: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)


Results = dict[str, dict[int, float]]


def measure(workdir: Path, n: int, repeat: int, results: Results,
            extra: dict[int, dict[str, Any]]) -> None:
    def put(name: str, value: float) -> None:
        results.setdefault(name, {})[n] = value

    root, info = build_root(workdir, n)
    dbs = snapshotter_dbs(root)
    index = workdir / f"index-{n}.sqlite"
    docs = floor(root)
    splits: list[tuple[float, dict[str, float]]] = []
    for _ in range(max(repeat, 7)):
        split: dict[str, float] = {}
        start = time.perf_counter()
        floor(root, split=split)
        splits.append((time.perf_counter() - start, split))
    fastest_floor, parts = min(splits, key=lambda x: x[0])
    put("floor", fastest_floor)
    for name, seconds in parts.items():
        put(name, seconds)  # the parts of the fastest floor
    put("floor + sha256", best(lambda: floor(root, digest=True), max(repeat, 7)))
    cold = []
    for _ in range(repeat):
        drop_index(index)
        cold.append(probe(root, index))
    fastest = min(cold, key=lambda c: c["seconds"])
    put("cold sync", fastest["seconds"])
    for label, seconds in fastest["steps"].items():
        put(f"cold sync: {label}", seconds)
    empty = []
    for _ in range(repeat):
        drop_index(index)
        empty.append(probe(root, index, "nosync")["seconds"])
    put(NEW_INDEX, min(empty))
    drop_index(index)
    probe(root, index)  # the index the warm opens find
    warm = [probe(root, index) for _ in range(repeat)]
    if not all(w["was_fresh"] for w in warm) or len({w["images"] for w in cold + warm}) != 1:
        raise RuntimeError(f"the warm opens did not find the index fresh: {warm}")
    put("warm open", min(w["seconds"] for w in warm))
    quick = [probe(root, index, "quick") for _ in range(max(repeat, 7))]
    put("warm open (command line)", min(q["seconds"] for q in quick))
    put("fresh() alone", min(w["fresh"] for w in warm))
    put("stat floor", best(lambda: stat_floor(root, dbs), max(repeat, 200)))
    # A warm open runs once in a fresh process: its floor is measured the same way (the
    # first connection of a process reads the index's schema; a loop would not).
    put("index floor", min(probe(root, index, "index-floor")["seconds"]
                           for _ in range(max(repeat, 7))))
    extra[n] = {**info, "documents": docs, "indexed_images": cold[0]["images"],
                "cold_rss_mb": max(c["rss_mb"] for c in cold),
                "meta_db_bytes": (root / META_DB).stat().st_size,
                "blob_files": len(os.listdir(root / CONTENT / "blobs" / "sha256"))}


def profile(workdir: Path, n: int, top: int = 30) -> str:
    """cProfile of one cold sync and one warm open in this process, after an untimed cold
    open (so that no import is in the profile)."""
    import imagestore

    root, _ = build_root(workdir, n)
    index = workdir / f"profile-{n}.sqlite"
    drop_index(index)
    imagestore.open(root, index, namespace=NAMESPACE).close()
    out = []
    for label in ("cold sync", "warm open"):
        if label == "cold sync":
            drop_index(index)
        prof = cProfile.Profile()
        prof.enable()
        store = imagestore.open(root, index, namespace=NAMESPACE)
        prof.disable()
        store.close()
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(prof, stream=text).strip_dirs().sort_stats(order).print_stats(top)
            out.append(f"== N = {n:,}, {label}, by {order} ==\n{text.getvalue()}")
    drop_index(index)
    return "\n".join(out)


# -- the report --------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    from bench.run import fmt_time as fmt

    return fmt(seconds)


def verdict(value: float, limit: float) -> str:
    shown = f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return f"{shown} {'✅' if value <= limit else '❌'}"


STEP_FLOOR = {"meta.db read and decoded": FLOOR_META,
              "snapshotter dbs read": FLOOR_SNAPS,
              "manifests and configs resolved": FLOOR_DOCS}
RUN = "sync.containerd.run, all of it"


def step_rows(r: Results, n: int) -> list[tuple[str, float, float | None]]:
    """(step, imagestore's seconds, the floor's seconds for the same work) at size n."""
    out: list[tuple[str, float, float | None]] = []
    inner = 0.0
    for _, _, label in STEPS[:-1]:
        seconds = r.get(f"cold sync: {label}", {}).get(n)
        if seconds is None:
            continue
        inner += seconds
        part = STEP_FLOOR.get(label)
        out.append((label, seconds, r[part][n] if part else None))
    run = r.get(f"cold sync: {RUN}", {}).get(n)
    if run is not None:
        out.append(("the rest of the sync (signature, report, …)", run - inner, None))
        out.append(("outside the sync: index made, committed, store opened",
                    r["cold sync"][n] - run, None))
    out.append(("**cold sync** / **floor**", r["cold sync"][n], r["floor"][n]))
    return out


def render(results: Results, sizes: list[int]) -> str:
    r = results
    lines = ["| N images | floor | cold sync | cold / floor (target ≤ 1.5) | warm open "
             "(command line) | its floor | warm / floor (target ≤ 1.5) | warm open (library, "
             "SQLAlchemy) |", "|" + " --- |" * 8]
    for n in sizes:
        warm = r["warm open (command line)"][n]
        lines.append(
            f"| {n:,} | {fmt_time(r['floor'][n])} | {fmt_time(r['cold sync'][n])} | "
            f"{verdict(r['cold sync'][n] / r['floor'][n], TARGET_COLD)} | "
            f"{fmt_time(warm)} | {fmt_time(r['index floor'][n])} | "
            f"{verdict(warm / r['index floor'][n], TARGET_WARM)} | "
            f"{fmt_time(r['warm open'][n])} |")
    lines += ["", "| N images | floor + sha256 | cold / (floor + sha256) | floor without the "
              "snapshotter file | cold / that | new index, nothing read | `fresh()` alone "
              "| fresh() / stat floor | index floor | warm / index floor |",
              "|" + " --- |" * 10]
    for n in sizes:
        strict = r["floor"][n] - r[FLOOR_SNAPS][n]
        lines.append(
            f"| {n:,} | {fmt_time(r['floor + sha256'][n])} | "
            f"{r['cold sync'][n] / r['floor + sha256'][n]:.2f} | {fmt_time(strict)} | "
            f"{r['cold sync'][n] / strict:.2f} | {fmt_time(r[NEW_INDEX][n])} | "
            f"{fmt_time(r['fresh() alone'][n])} | "
            f"{r['fresh() alone'][n] / r['stat floor'][n]:.1f} | "
            f"{fmt_time(r['index floor'][n])} | "
            f"{r['warm open'][n] / r['index floor'][n]:.1f} |")
    lines += ["", "| step of the best cold sync | " + " | ".join(
        f"N = {n:,}: imagestore | the floor, same work" for n in sizes) + " |",
        "|" + " --- |" * (1 + 2 * len(sizes))]
    table = {n: step_rows(r, n) for n in sizes}
    for i, (label, _, _) in enumerate(table[sizes[0]]):
        cells = []
        for n in sizes:
            _, mine, theirs = table[n][i]
            cells += [fmt_time(mine), fmt_time(theirs) if theirs is not None else "—"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Results, sizes: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 6))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    shown = [(name, series) for name, series in results.items() if name in PLOTTED]
    for i, (name, series) in enumerate(shown):
        ax.plot(sizes, [series[n] for n in sizes], label=name,
                linestyle="--" if "floor" in name else "-", marker=markers[i % len(markers)])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images in the containerd namespace")
    ax.set_ylabel("seconds (best of k)")
    ax.set_title("imagestore on containerd's store: time against images (log-log)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_doc(text: str) -> None:
    write_section(BEGIN, END, HEADING, text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        probe_main(argv[1], argv[2], argv[3] if len(argv) > 3 else "open")
        return
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m bench.containerd",
                                 description=doc.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each measure (best kept)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-ctd-bench"))
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile a cold sync and a warm open (stderr, WORKDIR)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results: Results = {}
    extra: dict[int, dict[str, Any]] = {}
    started = time.perf_counter()
    for n in sizes:
        _say(f"measuring N = {n:,} …")
        measure(args.workdir, n, args.repeat, results, extra)
    elapsed = time.perf_counter() - started
    load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    table = render(results, sizes)
    print(table)
    if args.profile:
        for n in sizes:
            text = profile(args.workdir, n)
            (args.workdir / f"profile-{n}.txt").write_text(text)
            _say(text)
    (args.workdir / "last-run.json").write_text(json.dumps(
        {"results": {k: {str(n): v for n, v in s.items()} for k, s in results.items()},
         "roots": {str(n): e for n, e in extra.items()}}, indent=1))
    if args.no_write:
        return
    png = plot(results, sizes, DOCS / PNG)
    write_doc(doc_text(argv, results, extra, sizes, table, png,
                       (load_start, load_end), elapsed))
    _say("wrote docs/benchmarks.md" + (f" and docs/{PNG}" if png else ""))


def doc_text(argv: list[str], results: Results, extra: dict[int, dict[str, Any]],
             sizes: list[int], table: str, png: bool, load: tuple[str, str],
             elapsed: float) -> str:
    from bench.run import machine

    r, big = results, max(sizes)
    e = extra[big]
    roots = "; ".join(
        f"N = {n:,}: {x['names']:,} names, {x['blob_files']:,} blob files, "
        f"{x['committed_snapshots']:,} committed {x['snapshotter']} snapshots, meta.db "
        f"{x['meta_db_bytes'] / 2**20:.0f} MiB, imported in {x['import_seconds']:.0f} s"
        for n, x in sorted(extra.items()))
    cold_ok = all(r["cold sync"][n] / r["floor"][n] <= TARGET_COLD for n in sizes)
    warm_ok = all(r["warm open (command line)"][n] / r["index floor"][n] <= TARGET_WARM
                  for n in sizes)
    steps = {label: mine for label, mine, _ in step_rows(r, big)}
    meta_step = steps.get("meta.db read and decoded", 0.0)
    resolve_step = steps.get("manifests and configs resolved", 0.0)
    written = steps.get("rows built", 0.0) + steps.get("rows written (SQL)", 0.0)
    documents = r[FLOOR_DOCS][big]
    small = min(sizes)
    cold_ratios = ", ".join(f"{r['cold sync'][n] / r['floor'][n]:.2f} at N = {n:,}"
                            for n in sizes)
    warm_ratios = ", ".join(
        f"{r['warm open (command line)'][n] / r['index floor'][n]:.2f} at N = {n:,}"
        for n in sizes)
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
        f"`python -m bench.containerd {' '.join(argv)}` on {machine()}; load average "
        f"(1 / 5 / 15 min) {load[0]} before, {load[1]} after (2 cores shared with other "
        f"work: every figure is the best of {_repeat(argv)} runs). The run took "
        f"{elapsed:.0f} s; the roots were made once and are cached in the workdir.", "",
        "**The roots.** `bench/containerd.py` writes an OCI archive (`index.json` naming N "
        "manifests; each image its own config and its own small gzip layer on top of one of "
        f"{BASES} shared uncompressed base layers; every {ALIAS_EVERY}th image a second "
        "name; names carried by `io.containerd.image.name` and "
        "`org.opencontainers.image.ref.name`), and Debian's containerd "
        f"(`{e['containerd']}`), started with a private config (CRI off; root, state and "
        "sockets its own), runs `ctr -n moby images import` on it in batches of "
        f"{BATCH:,} images, unpacking to {e['snapshotter']}. containerd fsyncs every blob "
        "and every bbolt commit, so it imports on a tmpfs; the root is then copied into the "
        "workdir (`cp -a`) and a second containerd reads it back there: `ctr images ls` and "
        "`ctr snapshots ls` must list every name and every unpacked layer. " + roots + ".",
        "",
        "**What is measured.** *Floor*: plain Python reading every record — "
        "`imagestore.moby.bbolt.read` of `meta.db` and of the snapshotter's `metadata.db` "
        "(its records give the unpacked sizes Docker 29 shows) — and every manifest and "
        "config of every image record, walked from the records' targets (`open().read()`, "
        "`json.loads`). *Cold sync*: `imagestore.open(root, new_index, namespace=\"moby\")` "
        "in a fresh process whose imports are done before the clock starts (Alembic's "
        "too), closed after; it creates the index. *Warm open*: the same with the index "
        "just made, nothing changed (its freshness check only), through the library and "
        "through the command line's quick path. *Stat floor*: `os.stat` of "
        "`meta.db`, the snapshotter's `metadata.db`, the blob and ingest folders, and two "
        "64-byte reads of `meta.db`'s meta pages, in a plain loop (imagestore's signature "
        "also lists the root for snapshotters and reads their files' meta pages). *Index "
        "floor*: the same "
        "plus the stored signature read back through a plain `sqlite3` connection (a warm "
        "open has to compare with something). The steps of the cold sync are timed inside "
        "the real one (its functions wrapped where `sync.containerd` calls them).", "",
        table, "",
        "Peak RSS of the cold-sync process (`VmHWM`, largest of its runs): " + ", ".join(
            f"{x['cold_rss_mb']:.0f} MB at N = {n:,}" for n, x in sorted(extra.items()))
        + ".", "",
        *([f"![time against images, containerd]({PNG})", ""] if png else []),
        f"**Cold sync ≤ 1.5 x floor: {'met' if cold_ok else 'not met'}** "
        f"({cold_ratios}). "
        "Where the time over the floor goes "
        f"(N = {big:,}, the step table): reading and decoding `meta.db` takes "
        f"{fmt_time(meta_step)} against the floor's {fmt_time(r[FLOOR_META][big])} for "
        "the same file, read whole, while the sync reads only what it keeps (no labels "
        "of blobs or snapshots, no leases or ingests) and turns the image, snapshot and "
        "container records into dataclasses. Resolving the images takes "
        f"{fmt_time(resolve_step)} against the floor's {fmt_time(documents)} for reading "
        "the same documents: each manifest and config is also hashed against its digest, "
        "every layer's presence and chain ID and snapshot usage are worked out, and each "
        "becomes a dataclass (presence comes from one listing of the blob folder, and the "
        "cyclic garbage collector is paused during the sync). Building and writing the "
        f"rows, which the floor does not do at all, takes {fmt_time(written)}; making the "
        f"index (Alembic's migrations on a new SQLite file) {fmt_time(r[NEW_INDEX][big])}, "
        f"a fixed cost that weighs most at N = {small:,}. No single step holds the "
        "excess; what is left is the price of keeping every record, manifest, config, "
        "layer and snapshot as rows (about twelve rows an image), which the floor never "
        "writes.", "",
        f"**Warm open ≤ 1.5 x its floor: {'met' if warm_ok else 'not met'}** "
        f"({warm_ratios}). "
        "containerd's freshness signal does not grow with the store (a transaction ID per "
        "bbolt file and three folder stats), so the floor of a warm open is the index's "
        "own: the stat floor plus the stored signature read back through a bare `sqlite3` "
        f"connection (the index floor, {fmt_time(r['index floor'][big])}; the stats alone "
        f"are {fmt_time(r['stat floor'][big])}). The command line's warm open "
        "(`opening.open_quick`, what `ls`, `inspect`, `search`… run: sqlite3 alone, the "
        "signature compared, no SQLAlchemy) is measured against it. The library's "
        f"`imagestore.open` takes {fmt_time(r['warm open'][big])} warm: mostly `Index.open` "
        "through SQLAlchemy (engine, first connection, Alembic's revision check), the same "
        "fixed cost as on a classic store; its `fresh()` alone is "
        f"{fmt_time(r['fresh() alone'][big])} (the meta pages' checksums are computed in "
        "pure Python).", "",
    ])


def _repeat(argv: list[str]) -> int:
    if "--repeat" in argv:
        return int(argv[argv.index("--repeat") + 1])
    return 5


if __name__ == "__main__":
    main()
