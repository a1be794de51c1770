"""Reclaiming space at scale (issue #16): ``prune --dry-run`` and fsck's driver check on a large
synthetic store inside a data-root, against baselines measured in the same run.

    python -m bench.reclaim [--images 100000] [--repeat 3] [--workdir DIR] [--before DIR]
                            [--fsck-runs 1] [--no-write]

The store is ``bench/gen_imagedb.py``'s (seed 1) inside ``DATAROOT/image/vfs``, plus, made
here with a fixed seed: ``repositories.json`` tagging 10 % of the images (so that ``prune`` and
``prune -a`` differ), one vfs folder ``DATAROOT/vfs/dir/<cache-id>/`` per layer holding a
small file (every other one also ``etc/<name>.conf``), and 25 orphan folders that no layer
names (what fsck must find). Everything is generated once per workdir and reused.

Measured, warm (the index synced first, untimed; medians of ``--repeat`` runs):

* the ``imagestore`` CLI: ``prune --dry-run`` and ``prune -a --dry-run`` (whole processes,
  the plan printed to /dev/null), against the raw SQL of their candidates on the same index
  (``sqlite3``: heads, or heads and tagged images) and the raw SQL of everything the plan
  loads (images, edges, tags, layers, mounts); the bare interpreter for scale;
* the plan in-process, split: open (warm), the daemon's view from the index, the plan;
* which files a dry run opens (``strace -f -e trace=open,openat``, untimed runs): configs under
  ``imagedb/content`` must be 0 (only a label filter reads candidates' configs, from the
  index), driver folders are walked for their sizes (the reclaimable bytes);
* fsck's driver check: ``drivers.find_orphans(driver, drivers.read_references(layerdb),
  buildkit)`` and ``fsck.driver_findings`` (the same, plus BuildKit and the findings), against
  the system-call floor: ``os.scandir`` of ``vfs/dir`` plus reading every layer's
  ``cache-id``; whole ``fsck`` (a full rebuild that re-hashes every config) once;
* the walk floor of the reclaimable bytes: a plain ``os.scandir``/``lstat`` walk of every
  driver folder;
* with ``--before DIR`` (a copy of the package, ``DIR/imagestore``), the CLI runs and the
  in-process probes of that copy too, taking turns with this checkout's.

The generated store stays in the workdir for the next run (about 4 GB at 100,000 images:
remove it when done).

It prints tables and writes docs/benchmarks-reclaim-save.md (the save half is
``bench/save.py``; each rewrites its own section).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import fmt_time, median_time

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
DOC = DOCS / "benchmarks-reclaim-save.md"
SEED = 1
ORPHANS = 25
TAG_SHARE = 0.10


# -- the store -------------------------------------------------------------------------------


def generate(workdir: Path, n: int) -> Path:
    """``DATAROOT`` for ``n`` images: gen_imagedb's store, tags, driver folders, orphans."""
    data_root = workdir / f"dataroot-{n}"
    image_root = data_root / "image" / "vfs"
    if not (data_root / "gen-summary.json").exists():
        shutil.rmtree(data_root, ignore_errors=True)
        subprocess.run([sys.executable, str(HERE / "gen_imagedb.py"), str(data_root), str(n),
                        "--seed", str(SEED)], check=True, stdout=subprocess.DEVNULL)
    marker = data_root / "driver-summary.json"
    if marker.exists():
        return data_root
    rng = random.Random(SEED)
    content = image_root / "imagedb" / "content" / "sha256"
    ids = sorted(os.listdir(content))
    repos: dict[str, dict[str, str]] = {}
    for i, hex_id in enumerate(rng.sample(ids, int(len(ids) * TAG_SHARE))):
        repo = f"app{i % 100}"
        repos.setdefault(repo, {})[f"{repo}:v{i}"] = "sha256:" + hex_id
    (image_root / "repositories.json").write_text(json.dumps({"Repositories": repos}))
    folders = data_root / "vfs" / "dir"
    layers = image_root / "layerdb" / "sha256"
    made = 0
    for chain in sorted(os.listdir(layers)):
        cache = (layers / chain / "cache-id").read_text().strip()
        folder = folders / cache
        folder.mkdir()
        (folder / "layer.txt").write_bytes(rng.randbytes(rng.randint(100, 4000)))
        if made % 2:
            (folder / "etc").mkdir()
            (folder / "etc" / f"{chain[:12]}.conf").write_bytes(rng.randbytes(rng.randint(50,
                                                                                       900)))
        made += 1
    for _ in range(ORPHANS):
        orphan = folders / f"{rng.getrandbits(256):064x}"
        orphan.mkdir()
        (orphan / "left-behind.bin").write_bytes(rng.randbytes(rng.randint(1000, 100_000)))
    marker.write_text(json.dumps({"tagged_images": sum(map(len, repos.values())),
                                  "driver_folders": made, "orphans": ORPHANS}))
    return data_root


# -- baselines -------------------------------------------------------------------------------


def driver_floor(data_root: Path) -> int:
    """The system calls the driver check cannot avoid: list ``vfs/dir``, read every layer's
    ``cache-id``."""
    with os.scandir(data_root / "vfs" / "dir") as entries:
        names = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    layers = f"{data_root}/image/vfs/layerdb/sha256/"
    used = set()
    for name in os.listdir(layers):
        fd = os.open(f"{layers}{name}/cache-id", os.O_RDONLY)
        try:
            used.add(os.read(fd, 4096).strip())
        finally:
            os.close(fd)
    return len(names - {u.decode() for u in used})


def walk_floor(data_root: Path) -> int:
    """Apparent bytes of every driver folder, by a plain scandir walk (no symlink followed)."""
    total = 0
    stack = [str(data_root / "vfs" / "dir")]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    total += e.stat(follow_symlinks=False).st_size
    return total


HEADS = ("SELECT id, created FROM images i WHERE store_id = ? AND NOT EXISTS (SELECT 1 FROM "
         "image_parents p WHERE p.store_id = i.store_id AND p.parent_id = i.id) ORDER BY id")
ALL = ("SELECT id, created FROM images i WHERE store_id = ? AND (EXISTS (SELECT 1 FROM tags t "
       "WHERE t.store_id = i.store_id AND t.image_id = i.id) OR NOT EXISTS (SELECT 1 FROM "
       "image_parents p WHERE p.store_id = i.store_id AND p.parent_id = i.id)) ORDER BY id")
GRAPH = ("SELECT id, chain_id, created, last_updated FROM images WHERE store_id = ?",
         "SELECT child_id, parent_id FROM image_parents WHERE store_id = ?",
         "SELECT ref, repository, tag, digest, image_id FROM tags WHERE store_id = ?",
         "SELECT chain_id, parent_id, diff_size, cache_id FROM layers WHERE store_id = ?",
         "SELECT name, parent_id FROM mounts WHERE store_id = ?")


def raw_sql(index: Path, queries: tuple[str, ...]) -> Callable[[], int]:
    def run() -> int:
        conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            (store_id,) = conn.execute("SELECT id FROM stores").fetchone()
            return sum(len(conn.execute(q, (store_id,)).fetchall()) for q in queries)
        finally:
            conn.close()
    return run


# -- imagestore, each measurement in a process of its own ------------------------------------


class Tree:
    """Which imagestore runs: this checkout, or (``--before``) an older copy of the package
    put first on ``PYTHONPATH``, run from the workdir so that this checkout is not found."""

    def __init__(self, label: str, before: Path | None, workdir: Path) -> None:
        self.label = label
        self.env = dict(os.environ)
        self.cwd = HERE.parent
        if before is not None:
            self.env["PYTHONPATH"] = f"{before}{os.pathsep}{HERE.parent}"
            self.cwd = workdir

    def run(self, args: list[str], ok: tuple[int, ...] = (0,)) -> bytes:
        done = subprocess.run([sys.executable, *args], capture_output=True, cwd=self.cwd,
                              env=self.env)
        if done.returncode not in ok:
            raise SystemExit(f"{self.label}: {' '.join(args)}: exit {done.returncode}\n"
                             f"{done.stderr.decode(errors='replace')[-2000:]}")
        return done.stdout

    def cli(self, data_root: Path, index: Path, *args: str, ok: tuple[int, ...] = (0,)
            ) -> Callable[[], bytes]:
        argv = ["-m", "imagestore.cli", "--root", str(data_root / "image" / "vfs"),
                "--index", str(index), *args]
        return lambda: self.run(argv, ok)

    def probe(self, what: str, data_root: Path, index: Path, repeat: int,
              profile: Path | None = None) -> dict[str, float]:
        args = ["-m", "bench.reclaim", "--probe", what, "--data-root", str(data_root),
                "--index", str(index), "--repeat", str(repeat)]
        if profile is not None:
            args += ["--profile", str(profile)]
        result: dict[str, float] = json.loads(self.run(args))
        return result


def probe_plan(data_root: Path, index: Path, repeat: int, *, all_images: bool,
               profile: Path | None) -> dict[str, float]:
    """The plan without the process around it: warm open, the daemon's view, the plan."""
    from datetime import datetime, timezone

    import imagestore
    from imagestore.service.delete import Deleter
    from imagestore.service.prune import plan_prune

    times: dict[str, list[float]] = {"open (warm)": [], "daemon view from the index": [],
                                     "plan (decisions + driver folder sizes)": []}
    for i in range(repeat):
        t0 = time.perf_counter()
        store = imagestore.open(data_root / "image" / "vfs", index, readonly=True)
        t1 = time.perf_counter()
        try:
            deleter = Deleter(store, apply=False)
            t2 = time.perf_counter()
            plan_prune(deleter, dangling_only=not all_images, filters={}, unused_for=None,
                       now=datetime.now(timezone.utc))
            t3 = time.perf_counter()
            if profile is not None and i == 0:
                deleter = Deleter(store, apply=False)
                prof = cProfile.Profile()
                prof.enable()
                plan_prune(deleter, dangling_only=not all_images, filters={}, unused_for=None,
                           now=datetime.now(timezone.utc))
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
                profile.write_text(out.getvalue())
        finally:
            store.close()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[key].append(value)
    return {k: statistics.median(v) for k, v in times.items()}


def probe_driver(data_root: Path, index: Path, repeat: int) -> dict[str, float]:
    """fsck's driver check, in-process (fsck has no option to run only that part)."""
    import imagestore
    from imagestore.moby import drivers
    from imagestore.service import check as fsck

    store = imagestore.open(data_root / "image" / "vfs", index, readonly=True)
    try:
        driver = store.driver()
        assert driver is not None
        layerdb = store.root.layerdb
        found = drivers.find_orphans(driver, drivers.read_references(layerdb), frozenset())
        orphans = sum(f.kind == drivers.ORPHAN for f in found)
        if orphans != ORPHANS or len(found) != ORPHANS:
            raise SystemExit(f"find_orphans found {len(found)} ({orphans} orphans), "
                             f"not the {ORPHANS} orphans made")
        return {
            "read_references": median_time(lambda: drivers.read_references(layerdb), repeat),
            "find_orphans(read_references)": median_time(
                lambda: drivers.find_orphans(driver, drivers.read_references(layerdb),
                                             frozenset()), repeat),
            "fsck.driver_findings": median_time(lambda: fsck.driver_findings(store, driver),
                                                repeat),
        }
    finally:
        store.close()


def opened(cmd: list[str], cwd: Path, scratch: Path) -> dict[str, int] | None:
    """Files a command opens (strace, one untimed run), by where."""
    if shutil.which("strace") is None:
        return None
    trace = scratch / "strace.out"
    subprocess.run(["strace", "--seccomp-bpf", "-f", "-qq", "-e", "trace=open,openat,openat2",
                    "-o", str(trace), sys.executable, *cmd], check=True,
                   stdout=subprocess.DEVNULL, cwd=cwd)
    counts = {"configs": 0, "layerdb": 0, "relative": 0, "all": 0}
    for line in trace.read_text(errors="replace").splitlines():
        if "open" not in line or "= -1" in line:
            continue
        counts["all"] += 1
        if "/imagedb/content/" in line:
            counts["configs"] += 1
        elif "/layerdb/" in line:
            counts["layerdb"] += 1
        elif re.search(r'openat\((?!AT_FDCWD)\d+, "', line):
            counts["relative"] += 1  # driver folders, walked below an open folder
    trace.unlink()
    return counts


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def paired(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Medians, the functions taking turns within each round (so that a change of load on a
    shared machine falls on all of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# -- the run ---------------------------------------------------------------------------------


def measure(workdir: Path, n: int, repeat: int, fsck_runs: int, before: Path | None
            ) -> dict[str, Any]:
    data_root = generate(workdir, n)
    index = workdir / f"index-{n}.sqlite"
    summary = json.loads((data_root / "gen-summary.json").read_text())
    summary.update(json.loads((data_root / "driver-summary.json").read_text()))
    now = Tree("this checkout", None, workdir)
    old = Tree("before", before, workdir) if before is not None else None
    trees = [now] + ([old] if old is not None else [])
    now.cli(data_root, index, "sync")()  # a warm index: synced, untimed
    loads = [load()]
    t: dict[str, float] = {}
    ab: dict[str, dict[str, float]] = {}  # measure -> {tree label: seconds}

    def both(name: str, make: Callable[[Tree], Callable[[], object]]) -> None:
        got = paired({tree.label: make(tree) for tree in trees}, repeat)
        t[name] = got[now.label]
        if old is not None:
            ab[name] = got

    t["bare interpreter: python -c 'import sqlite3'"] = median_time(
        lambda: subprocess.run([sys.executable, "-c", "import sqlite3"], check=True), repeat)
    both("cli prune --dry-run", lambda tr: tr.cli(data_root, index, "--readonly", "prune",
                                                  "--dry-run"))
    both("cli prune -a --dry-run", lambda tr: tr.cli(data_root, index, "--readonly", "prune",
                                                     "-a", "--dry-run"))
    t["raw SQL: prune's candidates (heads)"] = median_time(raw_sql(index, (HEADS,)), repeat)
    t["raw SQL: prune -a's candidates (heads, tagged)"] = median_time(raw_sql(index, (ALL,)),
                                                                      repeat)
    t["raw SQL: every row the plan loads (5 selects)"] = median_time(raw_sql(index, GRAPH),
                                                                     repeat)
    profile = workdir / f"prune-profile-{n}.txt"
    for what, label in (("plan", "prune --dry-run"), ("plan-all", "prune -a --dry-run")):
        runs = {tree.label: tree.probe(what, data_root, index, repeat,
                                       profile if what == "plan" and tree is now else None)
                for tree in trees}
        for key, value in runs[now.label].items():
            t[f"in-process {label}: {key}"] = value
            if old is not None:
                ab[f"in-process {label}: {key}"] = {k: v[key] for k, v in runs.items()}
    t["floor: walk every driver folder (scandir, lstat)"] = median_time(
        lambda: walk_floor(data_root), repeat)
    t["floor: scandir vfs/dir + read every cache-id"] = median_time(
        lambda: driver_floor(data_root), repeat)
    runs = {tree.label: tree.probe("driver", data_root, index, repeat) for tree in trees}
    for key, value in runs[now.label].items():
        t[key] = value
        if old is not None:
            ab[key] = {k: v[key] for k, v in runs.items()}
    t["cli fsck (whole: full rebuild, every config re-hashed)"] = median_time(
        now.cli(data_root, index, "--readonly", "fsck", ok=(1,)), fsck_runs)
    loads.append(load())
    base = ["-m", "imagestore.cli", "--root", str(data_root / "image" / "vfs"), "--index",
            str(index), "--readonly", "prune"]
    opens = {"prune --dry-run": opened([*base, "--dry-run"], HERE.parent, workdir),
             "prune -a --dry-run": opened([*base, "-a", "--dry-run"], HERE.parent, workdir)}
    plans = [json.loads(now.cli(data_root, index, "--readonly", "prune", *a, "--dry-run",
                                "--json")()) for a in ((), ("-a",))]
    return {"n": n, "times": t, "ab": ab, "opens": opens, "summary": summary, "load": loads,
            "plans": [{"deleted": len(p["deleted"]), "untagged": len(p["untagged"]),
                       "layers_removed": len(p["layers_removed"]),
                       "driver_bytes": p["driver_bytes"]} for p in plans],
            "profile": profile.read_text() if profile.exists() else ""}


RATIOS = [
    ("`prune --dry-run` (CLI) / raw SQL of its candidates", "cli prune --dry-run",
     "raw SQL: prune's candidates (heads)"),
    ("`prune -a --dry-run` (CLI) / raw SQL of its candidates", "cli prune -a --dry-run",
     "raw SQL: prune -a's candidates (heads, tagged)"),
    ("`prune --dry-run` (CLI) / raw SQL of every row the plan loads", "cli prune --dry-run",
     "raw SQL: every row the plan loads (5 selects)"),
    ("prune's daemon view (in-process) / raw SQL of every row the plan loads",
     "in-process prune --dry-run: daemon view from the index",
     "raw SQL: every row the plan loads (5 selects)"),
    ("prune's plan (in-process) / walk floor of every driver folder",
     "in-process prune --dry-run: plan (decisions + driver folder sizes)",
     "floor: walk every driver folder (scandir, lstat)"),
    ("`read_references` / driver floor", "read_references",
     "floor: scandir vfs/dir + read every cache-id"),
    ("`find_orphans(read_references)` / driver floor", "find_orphans(read_references)",
     "floor: scandir vfs/dir + read every cache-id"),
    ("`fsck.driver_findings` / driver floor", "fsck.driver_findings",
     "floor: scandir vfs/dir + read every cache-id"),
]


def render(result: dict[str, Any]) -> str:
    t, n = result["times"], result["n"]
    lines = [f"| measure (N = {n:,} images) | median |", "| --- | --- |"]
    lines += [f"| {name} | {fmt_time(v)} |" for name, v in t.items()]
    lines += ["", "| ratio (same run) | value |", "| --- | --- |"]
    lines += [f"| {name} | {t[a] / t[b]:.3g} |" for name, a, b in RATIOS]
    lines += ["", "| files opened (strace -f, one untimed run) | configs under "
              "`imagedb/content` (target 0) | `layerdb` files | entries opened relative to an "
              "open folder (driver folders walked) | all opens |",
              "| --- | --- | --- | --- | --- |"]
    for cmd, c in result["opens"].items():
        if c is None:
            lines.append(f"| `{cmd}` | strace not available | | | |")
            continue
        mark = "✅" if c["configs"] == 0 else "❌"
        lines.append(f"| `{cmd}` | {c['configs']} {mark} | {c['layerdb']} | {c['relative']} | "
                     f"{c['all']} |")
    if result["ab"]:
        labels = list(next(iter(result["ab"].values())))
        lines += ["", "| measure | " + " | ".join(labels) + " | speed-up |",
                  "|" + " --- |" * (len(labels) + 2)]
        for name, got in result["ab"].items():
            lines.append(f"| {name} | " + " | ".join(fmt_time(got[k]) for k in labels)
                         + f" | {got[labels[1]] / got[labels[0]]:.2f}x |")
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace this benchmark's section of the shared doc (the other's is kept)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else (
        "# Benchmarks: reclaiming space and saving images\n\n"
        "Two benchmarks, each rewriting its own section of this file: `python -m bench.reclaim` "
        "(issue #16) and `python -m bench.save` (issue #17). Every ratio compares figures "
        "measured in the same run, on a warm page cache unless marked *cold*.\n\n"
        "<!-- reclaim:start -->\n<!-- reclaim:end -->\n\n<!-- save:start -->\n"
        "<!-- save:end -->\n")
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{start}\n{body.rstrip()}\n{end}{tail}")


def doc_text(argv: list[str], result: dict[str, Any], table: str) -> str:
    from bench.run import machine

    s, plans = result["summary"], result["plans"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    configs = [c["configs"] for c in result["opens"].values() if c is not None]
    verdict = ("met: no dry run opened a single config" if configs and not any(configs) else
               "NOT met" if configs else "not checked (no strace)")
    profile = "\n".join(result["profile"].splitlines()[:32])
    return "\n".join([
        "## Reclaiming space: `prune --dry-run` and fsck's driver check (issue #16)", "",
        f"Measured {stamp} with `python -m bench.reclaim {' '.join(argv)}` on {machine()}. "
        f"Load average (1 / 5 / 15 min) {result['load'][0]} before, {result['load'][1]} after "
        "(2 cores, possibly shared with another benchmark run: absolute times are noisy; the "
        "before/after figures come from runs that took turns).", "",
        f"Store: {s['images']:,} images (`bench/gen_imagedb.py`, seed 1), "
        f"{s['layers_distinct_chain_ids']:,} layers, inside a data-root "
        f"(`DATAROOT/image/vfs`); {s['tagged_images']:,} images tagged in `repositories.json`; "
        f"one vfs folder per layer (`DATAROOT/vfs/dir/<cache-id>/`, a small file, every other "
        f"one also `etc/<name>.conf`) and {s['orphans']} orphan folders. The index is synced "
        "before anything is timed (warm). Times are medians; CLI figures are whole processes "
        "(interpreter start, warm open, plan, the plan printed to /dev/null).", "",
        f"What the plans do: `prune --dry-run` deletes {plans[0]['deleted']:,} images and "
        f"{plans[0]['layers_removed']:,} layers ({plans[0]['driver_bytes']:,} driver bytes, "
        f"each released layer's folder walked for its size); `prune -a --dry-run` untags "
        f"{plans[1]['untagged']:,} references and deletes {plans[1]['deleted']:,} images and "
        f"{plans[1]['layers_removed']:,} layers.", "",
        table, "",
        f"**Target (issue #16): the plan comes from the index, not from re-reading every "
        f"config — {verdict}.** The candidates are one SQL query; the daemon's view is five "
        "plain selects (no config column); only a `label` filter reads candidates' configs, "
        "from the index. The issue set no time target; the ratios above are the record.", "",
        "Where the dry run's time goes: the raw SQL is a small part; most of the plan is "
        "moby's decision loop (`cli/prune.py`) and the size of every released layer's driver "
        "folder (the reclaimable bytes), walked folder by folder through file descriptors "
        "(no symlink followed, no mount crossed), which costs more system calls than the "
        "plain scandir walk of the floor. fsck's driver check is one listing of `vfs/dir` "
        "plus one read of every `cache-id`, close to its floor; whole `fsck` is dominated by "
        "its full rebuild (every config re-hashed), not by the driver part.", "",
        "Change made for this issue (`imagestore/moby/drivers.py`, `mountinfo.py`; behaviour "
        "unchanged, tests pass): the driver's folder path is computed once per driver "
        "instead of for every call, `walk` joins its (message-only) paths as strings, the "
        "per-call folder open is a plain call rather than a generator context manager, "
        "`read_references` builds its paths as strings, and `find_orphans` lists `vfs/dir` "
        "once instead of twice and formats only the layers whose folder is gone. Run with "
        "`--before DIR` (a copy of the package with the earlier modules), the last table "
        "compares the two.", "",
        "<details><summary>Profile of the in-process plan (cProfile, one run)</summary>", "",
        "```", profile, "```", "", "</details>",
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.reclaim",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fsck-runs", type=int, default=1,
                    help="runs of whole fsck (a full rebuild: slow)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-reclaim"))
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="also run an older copy of the package (DIR holds imagestore/)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--probe", choices=("plan", "plan-all", "driver"), help=argparse.SUPPRESS)
    ap.add_argument("--data-root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe is not None:  # one measurement, in this process, for the parent run
        if args.probe == "driver":
            out = probe_driver(args.data_root, args.index, args.repeat)
        else:
            out = probe_plan(args.data_root, args.index, args.repeat,
                             all_images=args.probe == "plan-all", profile=args.profile)
        print(json.dumps(out))
        return
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"measuring N = {args.images:,} in {args.workdir} …", file=sys.stderr, flush=True)
    result = measure(args.workdir, args.images, args.repeat, args.fsck_runs,
                     args.before.resolve() if args.before else None)
    table = render(result)
    print(table)
    print(f"load average {result['load'][0]} before, {result['load'][1]} after",
          file=sys.stderr)
    if args.no_write:
        return
    shown = sys.argv[1:] if argv is None else argv
    write_section("reclaim", doc_text(shown, result, table))
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
