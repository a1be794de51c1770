"""Saving at the speed of the disk (issue #17): ``imagestore save`` of an image with large
layers, against plain reading of the same driver files and tar-split in the same run.

    python -m bench.save [--workdir DIR] [--layers "300,300,300;1024"] [--repeat 3] [--keep]
                         [--before DIR] [--no-write]

The data-root is built here with a fixed seed: one vfs folder per layer, each layer's files
pseudo-random (incompressible) bytes of the sizes ``--layers`` gives (MiB; ``,`` between the
files of a layer, ``;`` between layers; the first layer also gets ``--small-files`` small
files), its tar-split written as tar-split writes it (each header, with the padding before
it, a raw segment; each file an entry with its size and CRC-64), its diff ID the sha256 of
the tar that rebuilds, and an image config and tag that name the layers. Everything is
removed at the end unless ``--keep``.

The page cache cannot be dropped here (not root of the host, a shared machine), so the main
measurements are on a warm cache: the files were just written, and each measurement first
runs once untimed. Two *cold* ones evict this run's layer files and tar-splits first
(``posix_fadvise`` DONTNEED, untimed) so that they read from the disk: ``save -o -`` and the
plain read. Each round runs every measurement in turn; the figures are medians.

* ``imagestore save bench/save:latest -o -`` into /dev/null: a whole process (interpreter,
  warm open of the index, the image's config read and checked, every layer rebuilt from its
  tar-split and driver files, CRC-64 and sha256 checked) and its peak RSS (``VmHWM``);
* the same with ``-o FILE`` on the same disk (written aside, fsync'd, renamed), against a
  plain copy of the same bytes into one file, fsync'd;
* ``tarsplit.stream_layer`` of every layer in-process (the rebuild alone);
* baselines: read every driver file and the tar-split (1 MiB reads); the same plus sha256
  of what was read; the same plus the CRC-64 tar-split checks (``save_go.crc64``);
* with ``--before DIR``, the warm ``save -o -`` of an older copy of the package too.

Throughput is each measure's own bytes (the archive's, or the bytes read) per second.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 1
TAG = "bench/save:latest"
BEFORE = "imagestore save -o - (to /dev/null), the --before copy"
COLD_SAVE = "cold: imagestore save -o - (to /dev/null)"
COLD_READ = "cold: read driver files + tar-split"
MiB = 1 << 20
READ = 1 << 20

# Runs the CLI in a fresh interpreter and records its peak RSS (VmHWM: ru_maxrss would carry
# the forking parent's peak across exec).
_RSS = """
import atexit, sys
out = sys.argv.pop(1)
def report():
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(hwm.split()[1])
atexit.register(report)
from imagestore.cli import main
main(sys.argv[1:])
"""


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- the data-root ---------------------------------------------------------------------------


class Layer:
    def __init__(self, folder: Path, files: list[tuple[str, int]]) -> None:
        self.folder = folder  # vfs/dir/<cache-id>
        self.files = files  # (name in the tar, size); folders end with "/"
        self.diff_id = ""
        self.tar_length = 0


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
    info.size, info.mtime = size, 1_700_000_000
    info.mode = 0o755 if name.endswith("/") else 0o644
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT)


def build_layer(layer: Layer, tar_split: Path, seed: int) -> None:
    """Write the layer's files and its tar-split, computing its diff ID on the way."""
    from imagestore.moby.save_go import crc64

    rng = random.Random(seed)
    sha = hashlib.sha256()
    pending = b""  # the previous file's padding: tar-split puts it before the next header
    total = 0
    with gzip.open(tar_split, "wb", compresslevel=6) as gz:
        for position, (name, size) in enumerate(layer.files):
            segment = pending + _header(name, size)
            sha.update(segment)
            total += len(segment)
            gz.write(json.dumps({"type": 2, "payload": base64.b64encode(segment).decode(),
                                 "position": 2 * position}).encode() + b"\n")
            path = layer.folder / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
                entry: dict[str, Any] = {"type": 1, "name": name, "payload": None}
            else:
                crc, left = 0, size
                with path.open("wb") as f:
                    while left:
                        chunk = rng.randbytes(min(MiB, left))
                        f.write(chunk)
                        sha.update(chunk)
                        crc = crc64(chunk, crc)
                        left -= len(chunk)
                entry = {"type": 1, "name": name, "size": size,
                         "payload": base64.b64encode(crc.to_bytes(8, "big")).decode()}
            entry["position"] = 2 * position + 1
            gz.write(json.dumps(entry).encode() + b"\n")
            total += size
            pending = b"\0" * (-size % 512)
        tail = pending + b"\0" * 1024
        sha.update(tail)
        total += len(tail)
        gz.write(json.dumps({"type": 2, "payload": base64.b64encode(tail).decode(),
                             "position": 2 * len(layer.files)}).encode() + b"\n")
    layer.diff_id = "sha256:" + sha.hexdigest()
    layer.tar_length = total


def build(data_root: Path, spec: list[list[int]], small_files: int) -> list[Layer]:
    """The data-root: driver folders, layerdb with tar-splits, the config, the tag."""
    from imagestore.moby.digest import chain_ids

    image_root = data_root / "image" / "vfs"
    layerdb = image_root / "layerdb" / "sha256"
    content = image_root / "imagedb" / "content" / "sha256"
    for d in (layerdb, content, image_root / "imagedb" / "metadata" / "sha256",
              image_root / "layerdb" / "mounts", data_root / "vfs" / "dir"):
        d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    layers = []
    for i, sizes in enumerate(spec):
        cache = f"{rng.getrandbits(256):064x}"
        files: list[tuple[str, int]] = [("data/", 0)]
        files += [(f"data/big-{j}.bin", mib * MiB) for j, mib in enumerate(sizes)]
        if i == 0 and small_files:
            files.append(("etc/", 0))
            files += [(f"etc/small-{j:04d}.conf", rng.randint(100, 64 << 10))
                      for j in range(small_files)]
        layer = Layer(data_root / "vfs" / "dir" / cache, files)
        layer.folder.mkdir()
        scratch = data_root / f"tar-split-{i}.json.gz"
        build_layer(layer, scratch, SEED * 1000 + i)
        layers.append((layer, cache, scratch))
    chains = chain_ids([layer.diff_id for layer, _, _ in layers])
    parent = None
    for (layer, cache, scratch), chain in zip(layers, chains, strict=True):
        folder = layerdb / chain[len("sha256:"):]
        folder.mkdir()
        (folder / "diff").write_text(layer.diff_id)
        (folder / "size").write_text(str(sum(size for _, size in layer.files)))
        (folder / "cache-id").write_text(cache)
        if parent is not None:
            (folder / "parent").write_text(parent)
        os.rename(scratch, folder / "tar-split.json.gz")
        parent = chain
    history = [{"created": "2024-01-01T00:00:00Z", "created_by": f"COPY layer {i} /data"}
               for i in range(len(layers))]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer, _, _ in layers]},
    }, separators=(",", ":")).encode()
    image_id = hashlib.sha256(config).hexdigest()
    (content / image_id).write_bytes(config)
    name = TAG.rsplit(":", 1)[0]
    (image_root / "repositories.json").write_text(json.dumps(
        {"Repositories": {name: {TAG: "sha256:" + image_id}}}))
    return [layer for layer, _, _ in layers]


# -- baselines -------------------------------------------------------------------------------


def driver_files(data_root: Path, layers: list[Layer]) -> list[Path]:
    """Every driver file and tar-split of the image, in the order save reads them."""
    out = []
    for layer in layers:
        out += [layer.folder / name for name, _ in layer.files if not name.endswith("/")]
    out += sorted((data_root / "image" / "vfs" / "layerdb" / "sha256").glob("*/tar-split.json.gz"))
    return out


def read_all(paths: list[Path], digest: bool = False, crc: bool = False) -> int:
    """Read each file in 1 MiB reads; optionally sha256 everything read (one running hash,
    as over a layer's tar) and CRC-64 each file (the tar-split check)."""
    from imagestore.moby.save_go import crc64

    buf = bytearray(READ)
    view = memoryview(buf)
    sha = hashlib.sha256()
    total = 0
    for path in paths:
        check = 0
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
                if digest:
                    sha.update(view[:n])
                if crc:
                    check = crc64(view[:n], check)
    return total


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (``posix_fadvise`` DONTNEED, after an
    ``fsync`` so that none is dirty): the next read comes from the disk. Only our own files
    are touched; the machine's caches are not dropped."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def copy_all(paths: list[Path], target: Path) -> int:
    """A plain copy of the same bytes into one file on the same disk, fsync'd."""
    buf = bytearray(READ)
    view = memoryview(buf)
    total = 0
    with open(target, "wb", buffering=0) as out:
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    out.write(view[:n])
                    total += n
        os.fsync(out.fileno())
    target.unlink()
    return total


def stream_all(data_root: Path, layers: list[Layer]) -> int:
    """Every layer's tar rebuilt in-process by ``tarsplit.stream_layer``, discarded."""
    from imagestore.moby.digest import chain_ids
    from imagestore.moby.tarsplit import layer_source, stream_layer

    image_root = data_root / "image" / "vfs"
    total = 0
    diffs = [layer.diff_id for layer in layers]
    for diff, chain in zip(diffs, chain_ids(diffs), strict=True):
        total += sum(len(chunk) for chunk in stream_layer(layer_source(image_root, chain, diff)))
    return total


# -- the run ---------------------------------------------------------------------------------


def measure(workdir: Path, spec: list[list[int]], small_files: int, repeat: int,
            keep: bool, before: Path | None = None) -> dict[str, Any]:
    data_root = workdir / "dataroot"
    index = workdir / "index.sqlite"
    shutil.rmtree(data_root, ignore_errors=True)
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    data_mib = sum(map(sum, spec)) + small_files * 32 / 1024
    free = shutil.disk_usage(workdir).free
    if free < 2.5 * data_mib * MiB:
        raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free, the run needs "
                         f"{2.5 * data_mib / 1024:.1f} GiB (data, and the archive on disk)")
    print(f"building {data_mib / 1024:.2f} GiB of layers in {data_root} …", file=sys.stderr,
          flush=True)
    started = time.perf_counter()
    layers = build(data_root, spec, small_files)
    built = time.perf_counter() - started
    try:
        return _measure(workdir, data_root, index, layers, repeat, built, before)
    finally:
        for scratch in ("rss.txt", "archive.tar", "copy.bin"):
            (workdir / scratch).unlink(missing_ok=True)
        if not keep:
            shutil.rmtree(data_root, ignore_errors=True)
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{index}{suffix}").unlink(missing_ok=True)


def _measure(workdir: Path, data_root: Path, index: Path, layers: list[Layer], repeat: int,
             built: float, before: Path | None) -> dict[str, Any]:
    cli = [sys.executable, "-c", _RSS]
    args = ["--root", str(data_root / "image" / "vfs"), "--index", str(index), "--readonly"]
    subprocess.run([sys.executable, "-m", "imagestore.cli", *args[:4], "sync"], check=True,
                   stdout=subprocess.DEVNULL, cwd=HERE.parent)
    rss_file = workdir / "rss.txt"
    archive_file = workdir / "archive.tar"
    peaks: list[int] = []
    sizes: dict[str, int] = {}

    def save_stream(before: Path | None = None) -> None:
        env, cwd = dict(os.environ), HERE.parent
        if before is not None:  # an older copy of the package, first on the path
            env["PYTHONPATH"], cwd = str(before), workdir
        with open(os.devnull, "wb") as sink:
            subprocess.run([*cli, str(rss_file), *args, "save", TAG, "-o", "-"], check=True,
                           stdout=sink, cwd=cwd, env=env)
        if before is None:
            peaks.append(int(rss_file.read_text()))

    def save_file() -> None:
        subprocess.run([*cli, str(rss_file), *args, "save", TAG, "-o", str(archive_file)],
                       check=True, cwd=HERE.parent)
        sizes["archive"] = archive_file.stat().st_size
        archive_file.unlink()

    paths = driver_files(data_root, layers)
    fns: dict[str, Callable[[], object]] = {
        "imagestore save -o - (to /dev/null)": save_stream,
        "baseline: read driver files + tar-split": lambda: read_all(paths),
        "baseline: read + sha256": lambda: read_all(paths, digest=True),
        "baseline: read + sha256 + CRC-64 per file": lambda: read_all(paths, digest=True,
                                                                        crc=True),
        "tarsplit.stream_layer, every layer (in-process)": lambda: stream_all(data_root, layers),
        "imagestore save -o FILE (same disk, fsync'd)": save_file,
        "baseline: copy driver files + tar-split to one file, fsync'd":
            lambda: copy_all(paths, workdir / "copy.bin"),
    }
    if before is not None:
        fns[BEFORE] = lambda: save_stream(before)
    # Cold: the layers' files and tar-splits evicted first (untimed); the rest stays warm.
    fns[COLD_SAVE] = save_stream
    fns[COLD_READ] = lambda: read_all(paths)
    prepare = {COLD_SAVE: lambda: evict(paths), COLD_READ: lambda: evict(paths)}
    sizes["read"] = read_all(paths)
    sizes["stream"] = stream_all(data_root, layers)
    loads = [load()]
    for key, fn in fns.items():  # warm-up: page cache, index, interpreter files
        if key not in prepare:
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            prepare.get(key, lambda: None)()
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    loads.append(load())
    size_of = {key: sizes["archive"] if "imagestore save" in key else
               sizes["stream"] if key.startswith("tarsplit") else sizes["read"] for key in fns}
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "bytes": size_of,
            "peak_rss_kib": max(peaks), "rss_runs": len(peaks),
            "layers": [(layer.tar_length, len(layer.files)) for layer in layers],
            "built": built, "load": loads, "repeat": repeat}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def render(result: dict[str, Any]) -> str:
    t, b = result["times"], result["bytes"]
    rate = {k: b[k] / t[k] / 1e6 for k in t}
    save = "imagestore save -o - (to /dev/null)"
    to_file = "imagestore save -o FILE (same disk, fsync'd)"
    lines = ["| measure (warm page cache, unless *cold*) | median | bytes | MB/s |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {fmt_time(t[k])} | {b[k]:,} | {rate[k]:.0f} |" for k in t]
    peak = result["peak_rss_kib"] / 1024
    lines += ["", "| ratio (same run, MB/s over MB/s) | value | target |", "| --- | --- | --- |"]
    for key, target in (("baseline: read driver files + tar-split", 0.7),
                        ("baseline: read + sha256", None),
                        ("baseline: read + sha256 + CRC-64 per file", None)):
        value = rate[save] / rate[key]
        mark = "" if target is None else (f"≥ {target} " + ("✅" if value >= target else "❌"))
        lines.append(f"| warm: save -o - / {key.removeprefix('baseline: ')} | {value:.3g} | "
                     f"{mark} |")
    copy = "baseline: copy driver files + tar-split to one file, fsync'd"
    lines.append(f"| warm: save -o FILE / copy to one file | {rate[to_file] / rate[copy]:.3g} | |")
    cold = rate[COLD_SAVE] / rate[COLD_READ]
    lines.append(f"| cold: save -o - / read (both from the disk) | {cold:.3g} | "
                 f"≥ 0.7 {'✅' if cold >= 0.7 else '❌'} |")
    if BEFORE in rate:
        lines.append(f"| warm: save -o -, this checkout / the --before copy | "
                     f"{rate[save] / rate[BEFORE]:.3g} | |")
    big = max(length for length, _ in result["layers"])
    lines += ["", f"Peak RSS of the save process (VmHWM, largest of {result['rss_runs']} runs): "
              f"**{peak:.0f} MB** for an archive of {b[save] / 2**30:.2f} GiB whose largest "
              f"layer is {big / 2**30:.2f} GiB (target < 100 MB: "
              f"{'met ✅' if peak < 100 else 'NOT met ❌'})."]
    return "\n".join(lines)


def doc_text(argv: list[str], result: dict[str, Any], table: str) -> str:
    from bench.run import machine

    t, b = result["times"], result["bytes"]
    rate = {k: b[k] / t[k] / 1e6 for k in t}
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    layers = "; ".join(f"layer {i}: {length / 2**20:,.0f} MiB tar, {files} entries"
                       for i, (length, files) in enumerate(result["layers"]))
    read, sha, crc = ("baseline: read driver files + tar-split", "baseline: read + sha256",
                      "baseline: read + sha256 + CRC-64 per file")
    crc_share = (t[crc] - t[sha]) / t[crc]
    save = "imagestore save -o - (to /dev/null)"
    warm = rate[save] / rate[read]
    cold = rate[COLD_SAVE] / rate[COLD_READ]
    return "\n".join([
        "## Saving: `imagestore save` against reading the same files (issue #17)", "",
        f"Measured {stamp} with `python -m bench.save {' '.join(argv)}` on {machine()}. "
        f"Load average (1 / 5 / 15 min) {result['load'][0]} before, {result['load'][1]} "
        "after (2 cores, possibly shared with another benchmark run). "
        f"Building the data-root took {result['built']:.0f} s (not timed); it is removed "
        "after the run.", "",
        f"One image, {layers}; files of pseudo-random bytes, a tar-split written as "
        "tar-split writes it, under `DATAROOT/image/vfs` and `DATAROOT/vfs/dir`. The archive "
        "goes to /dev/null through `-o -` (whole CLI process: interpreter, warm open, config "
        "checked, layers rebuilt and checked); `-o FILE` writes it on the same disk. Dropping "
        "the machine's caches is not possible here, so the main figures are on a **warm page "
        "cache for both sides** (CPU work, not the disk). The *cold* rows evict only this "
        "run's layer files and tar-splits first (`posix_fadvise` DONTNEED after `fsync`): "
        "their reads then come from the virtual disk, whose speed varies with the host's own "
        f"cache. Medians of {result['repeat']} rounds, every measure taking its turn in each "
        "round.", "",
        table, "",
        f"**Target (issue #17): save at ≥ 0.7 x plain reading — not met on a warm cache "
        f"({warm:.2f}x); {'met' if cold >= 0.7 else 'not met'} when both read from the "
        f"disk ({cold:.2f}x).** Plain reading of cached pages is a memory copy "
        f"({rate[read]:,.0f} MB/s); `save` must also do what makes the archive loadable: "
        "sha256 of every layer tar (the diff ID) and the CRC-64 of every file against its "
        f"tar-split entry (as moby's tar-split does). Those two checks alone, done by the "
        f"plainest loop, run at {rate[crc]:,.0f} MB/s, and the CRC-64 is "
        f"{crc_share:.0%} of that time: pure Python has no C CRC-64, so it is computed with "
        "big-integer folds (`save_go.crc64`). `save` reaches "
        f"{rate[save] / rate[crc]:.2f} x that floor; the rest is the process (interpreter, "
        "open) and the archive's headers and copies. **Peak RSS target (< 100 MB for a "
        f"1 GB layer): {'met' if result['peak_rss_kib'] < 100 * 1024 else 'NOT met'}.**", "",
        "What would move it: the CRC-64 is the bulk of the work. Without it while streaming "
        "(the layer's sha256, checked at the end, already proves every byte; CRCs would then "
        "only be computed to name the file when the digest fails), the floor would be read + "
        f"sha256 ({rate[sha]:,.0f} MB/s), at the cost of reporting a changed file only after "
        "the last chunk instead of at that file; a C CRC-64 would need a new dependency. "
        "Hashing in a second thread (hashlib releases the GIL) while the CRC runs would use "
        "the second core. Even then, a warm page cache reads faster than any sha256: the "
        "0.7 target can only hold against reads that come from a real disk.", "",
        "Change made for this issue (`imagestore/moby/save_go.py`): `crc64` folds the "
        "little-endian integer directly (a reflected CRC needs no bit reversal: the "
        "per-block `translate` and its copy are gone), with 128 KiB blocks, and finishes the "
        "last < 32 bytes with the table. Same results (checked against the bit-by-bit "
        "definition and the previous code on thousands of lengths and start values; the "
        "test suite passes). With `--before DIR` (a copy of the package with the previous "
        "`save_go.py`) the table shows the two saves side by side.", "",
    ])


def write_section(body: str) -> None:
    from bench.reclaim import write_section as write

    write("save", body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.save", description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-save"))
    ap.add_argument("--layers", default="300,300,300;1024",
                    help="MiB per file: ',' between files, ';' between layers")
    ap.add_argument("--small-files", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the data-root in the workdir")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="also save with an older copy of the package (DIR holds imagestore/)")
    args = ap.parse_args(argv)
    spec = [[int(x) for x in layer.split(",")] for layer in args.layers.split(";")]
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = measure(args.workdir, spec, args.small_files, args.repeat, args.keep,
                     args.before.resolve() if args.before else None)
    table = render(result)
    print(table)
    print(f"load average {result['load'][0]} before, {result['load'][1]} after", file=sys.stderr)
    if args.no_write:
        return
    write_section(doc_text(sys.argv[1:] if argv is None else argv, result, table))
    print("wrote docs/benchmarks-reclaim-save.md", file=sys.stderr)


if __name__ == "__main__":
    main()
