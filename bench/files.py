"""Layer file lists (issue 25): reading a store's lists into the index against plain Python
reading and parsing the same ``tar-split.json.gz`` files, and ``which`` of one path over
millions of entries, measured in one run.

    python -m bench.files [--images 2000] [--entries 2000] [--repeat 3] [--workdir DIR]
                          [--profile] [--no-write]
    (also ``python -m bench files …``)

The store: ``bench/gen_imagedb.py`` (seed 1) makes the images and layerdb, then every
layerdb folder gets a ``tar-split.json.gz`` as tar-split writes it (Go's JSON, one line a
segment of raw ustar headers and one a file with its CRC-64): a head of its own (a folder
``opt/layer-<chain>`` and a ``marker`` file in it, so one path is held by one layer), then
one of ``TEMPLATES`` bodies of ``--entries`` entries (folders, files of varied sizes,
symlinks, hard links, and whiteouts of another body's files), so a body's path is held by
about one layer in ``TEMPLATES``. It is made once and cached in the workdir.

Measured, each the best of ``--repeat`` warm-cache runs:

* *plain*: for every layerdb folder, ``gzip`` + ``json.loads`` of each line, base64 of the
  payloads, and the header fields the lists keep (name, prefix, mode, uid, gid, size, mtime,
  type, link name: ``int(…, 8)`` and slicing), into a list of tuples;
* *read_files*: ``store.read_files()`` on an index just synced (each run on a fresh copy
  of it), the lists parsed and written;
* *which*: ``store.which(path)`` on the full index, for a path one layer holds, a path
  about one layer in ``TEMPLATES`` holds, a glob with a literal folder prefix and a
  file-name glob (no prefix: a scan of the path index); each against the same question
  through the ``image_files`` view (the general path), whose answer it must equal;
* the index's growth: bytes of the SQLite file before and after reading every list, per
  100,000 entries.

It prints a table and, unless ``--no-write``, puts it in docs/benchmarks.md (its own
section, between markers).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import functools
import gzip
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench.docs import write_section
from bench.run import best_time as best

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
BEGIN = "<!-- files-results:begin (written by python -m bench.files) -->"
END = "<!-- files-results:end -->"
HEADING = "## Layer file lists: reading them, and `which` (issue #25)"
SEED = 1
TEMPLATES = 64
TARGET_READ = 2.0  # read_files / plain
TARGET_WHICH = 0.050  # seconds, one exact path
EPOCH = 1_700_000_000


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the store ----------------------------------------------------------------------------

def _header(name: str, kind: bytes, size: int = 0, link: str = "", mode: int = 0o644
            ) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, link, mode
    info.mtime, info.uid, info.gid = EPOCH, 0, 0
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.USTAR_FORMAT)


def _lines(members: list[tuple[bytes, str, int]], pad: int, position: int
           ) -> tuple[list[bytes], int, int]:
    """tar-split lines (Go's JSON) for ``(header, name, size)`` members: a segment (the
    previous file's padding and the header), then the file entry with a CRC-64 stand-in.
    Returns the lines, the padding left and the next position."""
    out = []
    for header, name, size in members:
        raw = b"\0" * pad + header
        out.append(b'{"type":2,"payload":"' + base64.b64encode(raw) + b'","position":'
                   + str(position).encode() + b"}")
        crc = base64.b64encode(zlib.crc32(name.encode()).to_bytes(8, "big")).decode() \
            if size else None
        out.append(json.dumps({"type": 1, "name": name, "size": size, "payload": crc,
                               "position": position + 1}, separators=(",", ":")).encode())
        position += 2
        pad = -size % 512
    return out, pad, position


def _body(t: int, entries: int) -> list[tuple[bytes, str, int]]:
    """Template ``t``: folders of 20 entries under ``usr/share/pkg<t>``, files of varied
    sizes, a symlink and a hard link per folder, and whiteouts of template ``t - 1``'s."""
    members: list[tuple[bytes, str, int]] = []
    top = f"usr/share/pkg{t}"
    members.append((_header(top + "/", tarfile.DIRTYPE, mode=0o755), top + "/", 0))
    folder = 0
    while len(members) < entries:
        base = f"{top}/d{folder}"
        members.append((_header(base + "/", tarfile.DIRTYPE, mode=0o755), base + "/", 0))
        for i in range(17):
            name = f"{base}/file{i}.{'so' if i % 3 else 'dat'}"
            size = (t * 7919 + folder * 104729 + i * 1299709) % 200_000
            members.append((_header(name, tarfile.REGTYPE, size), name, size))
        members.append((_header(f"{base}/link", tarfile.SYMTYPE, link="file0.dat"),
                        f"{base}/link", 0))
        members.append((_header(f"{base}/hard", tarfile.LNKTYPE, link=f"{base}/file1.so"),
                        f"{base}/hard", 0))
        if folder % 10 == 0:
            gone = f"usr/share/pkg{(t - 1) % TEMPLATES}/d{folder}/.wh.file2.so"
            members.append((_header(gone, tarfile.REGTYPE), gone, 0))
        folder += 1
    members = members[:entries]
    if t % 16 == 3:  # a library some bodies hold (``which`` of a file-name glob)
        jar = f"opt/app{t}/lib/log4j-core-2.14.{t}.jar"
        members[-1:] = [(_header(jar, tarfile.REGTYPE, 1800), jar, 1800)]
    return members


def generate(workdir: Path, images: int, entries: int) -> Path:
    """The store (cached): its root (``…/image/vfs``)."""
    target = workdir / f"files-{images}-{entries}"
    root = target / "image" / "vfs"
    if (target / "done.json").exists():
        return root
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, str(HERE / "gen_imagedb.py"), str(target), str(images),
                    "--seed", str(SEED)], check=True, stdout=subprocess.DEVNULL)
    bodies = []
    for t in range(TEMPLATES):
        lines, pad, _ = _lines(_body(t, entries), 0, 2)
        end = b'{"type":2,"payload":"' + base64.b64encode(b"\0" * (pad + 1024)) + \
            b'","position":' + str(2 + len(lines)).encode() + b"}"
        bodies.append(gzip.compress(b"\n".join([*lines, end]) + b"\n", 6))
    layers = sorted((root / "layerdb" / "sha256").iterdir())
    total = 0
    for k, folder in enumerate(layers):
        head = f"opt/layer-{folder.name[:12]}"
        members = [(_header(head + "/", tarfile.DIRTYPE, mode=0o755), head + "/", 0),
                   (_header(head + "/marker", tarfile.REGTYPE, 512), head + "/marker", 512)]
        lines, _, _ = _lines(members, 0, 0)
        # gzip members concatenated are one gzip stream: the head, then a shared body
        data = gzip.compress(b"\n".join(lines) + b"\n", 6) + bodies[k % TEMPLATES]
        (folder / "tar-split.json.gz").write_bytes(data)
        total += entries + 2
    (target / "done.json").write_text(json.dumps({"layers": len(layers),
                                                  "entries": total}))
    return root


# -- plain Python ---------------------------------------------------------------------------

def plain(root: Path) -> int:
    """gzip + json per line + base64 + the raw header fields: the floor of reading lists."""
    count = 0
    for folder in os.scandir(root / "layerdb" / "sha256"):
        rows = []
        pending = b""
        with gzip.open(os.path.join(folder.path, "tar-split.json.gz"), "rb") as f:
            for line in f:
                doc = json.loads(line)
                if doc["type"] == 2:
                    pending += base64.b64decode(doc["payload"])
                    continue
                h = pending[len(pending) - 512:]
                pending = b""
                name = h[0:100].split(b"\0", 1)[0]
                prefix = h[345:500].split(b"\0", 1)[0]
                rows.append(((prefix + b"/" + name if prefix else name).decode(),
                             h[156:157], int(h[100:108].strip(b" \0") or b"0", 8),
                             int(h[108:116].strip(b" \0") or b"0", 8),
                             int(h[116:124].strip(b" \0") or b"0", 8),
                             int(h[124:136].strip(b" \0") or b"0", 8),
                             int(h[136:148].strip(b" \0") or b"0", 8),
                             h[157:257].split(b"\0", 1)[0].decode(),
                             base64.b64decode(doc["payload"]).hex()
                             if doc.get("payload") else None))
        count += len(rows)
    return count


# -- measures -------------------------------------------------------------------------------

def _synced(root: Path, index: Path) -> None:
    import imagestore

    index.unlink(missing_ok=True)
    with imagestore.open(root, index):
        pass


def _read(root: Path, index: Path) -> Any:
    import imagestore

    with imagestore.open(root, index, sync=False) as store:
        return store.read_files()


def _view_which(store: Any, pattern: str) -> list[dict[str, Any]]:
    """``which`` through the ``image_files`` view (the general path)."""
    from imagestore.service.files import which_general

    return which_general(store, pattern)


def measure(workdir: Path, images: int, entries: int, repeat: int, profile: bool
            ) -> dict[str, Any]:
    import imagestore

    root = generate(workdir, images, entries)
    done = json.loads((root.parent.parent / "done.json").read_text())
    out: dict[str, Any] = {"layers": done["layers"], "entries": done["entries"]}
    _say(f"store: {done['layers']:,} layers, {done['entries']:,} entries")
    plain(root)  # warm the page cache
    out["plain"] = best(lambda: plain(root), repeat)
    synced = workdir / "synced.sqlite"
    _synced(root, synced)
    out["index before"] = synced.stat().st_size
    times = []
    full = workdir / "full.sqlite"
    for _ in range(repeat):
        shutil.copyfile(synced, full)
        start = time.perf_counter()
        report = _read(root, full)
        times.append(time.perf_counter() - start)
    out["read_files"] = min(times)
    out["entries read"] = report.entries
    out["index after"] = full.stat().st_size
    if profile:
        shutil.copyfile(synced, full)
        prof = cProfile.Profile()
        prof.enable()
        _read(root, full)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
        _say(text.getvalue())
    with imagestore.open(root, full, sync=False) as store:
        layers = sorted((root / "layerdb" / "sha256").iterdir())
        one = f"opt/layer-{layers[len(layers) // 2].name[:12]}/marker"
        questions = [("one layer's path", one),
                     ("a body's path", "usr/share/pkg5/d3/file4.so"),
                     ("glob under a folder", "/usr/share/pkg5/d1*/file1?.so"),
                     ("file-name glob (no prefix)", "log4j-core-2.14*.jar")]
        out["which"] = []
        for label, pattern in questions:
            fast = store.which(pattern)
            view = None
            if label != "file-name glob (no prefix)" or entries * done["layers"] <= 1_000_000:
                start = time.perf_counter()
                general = _view_which(store, pattern)
                view = time.perf_counter() - start
                if fast != general:
                    raise SystemExit(f"which {pattern!r}: the fast path differs from the view")
            took = best(functools.partial(store.which, pattern), max(repeat, 5))
            out["which"].append({"label": label, "pattern": pattern, "seconds": took,
                                 "view": view, "images": len({r["image"] for r in fast})})
            _say(f"which {pattern}: {took * 1000:.1f} ms, {len(fast)} rows")
    return out


def fmt_time(seconds: float) -> str:
    from bench.run import fmt_time as fmt

    return fmt(seconds)


def render(r: dict[str, Any]) -> str:
    read_ratio = r["read_files"] / r["plain"]
    growth = (r["index after"] - r["index before"]) / r["entries read"] * 100_000
    rows = [
        "| layers | entries | plain Python | `read_files()` | read_files / plain "
        f"(target ≤ {TARGET_READ:g}) | index growth per 100,000 entries |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {r['layers']:,} | {r['entries read']:,} | {fmt_time(r['plain'])} | "
        f"{fmt_time(r['read_files'])} | {read_ratio:.2f} "
        f"{'✅' if read_ratio <= TARGET_READ else '❌'} | {growth / 2**20:.1f} MiB |",
        "",
        f"| `which` over {r['entries read']:,} entries | pattern | images | `store.which` "
        f"(target ≤ {TARGET_WHICH * 1000:g} ms for one path) | the `image_files` view, "
        "same answer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in r["which"]:
        exact = not any(c in w["pattern"] for c in "*?[")
        ok = (" ✅" if w["seconds"] <= TARGET_WHICH else " ❌") if exact else ""
        rows.append(f"| {w['label']} | `{w['pattern']}` | {w['images']:,} | "
                    f"{fmt_time(w['seconds'])}{ok} | "
                    f"{fmt_time(w['view']) if w['view'] is not None else '—'} |")
    return "\n".join(rows)


def write_doc(text: str) -> None:
    write_section(BEGIN, END, HEADING, text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.files",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=2000, help="entries of a layer's body")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-files-bench"))
    ap.add_argument("--profile", action="store_true", help="cProfile one read_files")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    r = measure(args.workdir, args.images, args.entries, args.repeat, args.profile)
    table = render(r)
    print(table)
    if args.no_write:
        return
    from bench.run import machine

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    read_ok = r["read_files"] / r["plain"] <= TARGET_READ
    exact = [w for w in r["which"] if not any(c in w["pattern"] for c in "*?[")]
    which_ok = all(w["seconds"] <= TARGET_WHICH for w in exact)
    write_doc("\n".join([
        f"Measured {stamp} with `python -m bench.files {' '.join(argv)}` on {machine()}; "
        f"the run took {time.perf_counter() - started:.0f} s (the store is cached in the "
        "workdir). Every figure is the best of the runs; ratios compare figures of this "
        "run. The store and what is measured: `bench/files.py`'s docstring.", "",
        table, "",
        f"**Reading lists ≤ {TARGET_READ:g} x plain Python: "
        f"{'met' if read_ok else 'not met'}** "
        f"({r['read_files'] / r['plain']:.2f}). "
        f"**`which` of one path ≤ {TARGET_WHICH * 1000:g} ms: "
        f"{'met' if which_ok else 'not met'}** "
        f"({', '.join(fmt_time(w['seconds']) for w in exact)}).", "",
        "*plain Python* runs in one process; `read_files()` parses the lists in one worker "
        "process per core while the main process writes the rows (docs/performance.md, "
        "*Layer file lists*). `which` reads the `(path, diff_id)` index, then the layers "
        "holding those diff IDs, the chains above them and their images; the view merges "
        "every image, and each answer is checked equal to the view's in the run. The globs "
        "have no target: one with a folder prefix reads a range of the index (its time grows "
        "with the rows it matches), a file name in any folder reads the whole index (SQLite "
        "cannot seek on a leading wildcard). The view is not run for that one at this size.",
        "",
    ]))
    _say("wrote docs/benchmarks.md")



if __name__ == "__main__":
    main()
