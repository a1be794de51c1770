"""The benchmark: imagestore against its baselines, measured side by side in one run.

    python -m bench [--sizes 1000,10000,20000,100000] [--repeat 3] [--workdir DIR] [--no-write]

For each size it generates a synthetic store (bench/gen_imagedb.py, fixed seed), then measures
the plain-Python floor (read + sha256 + json.loads of every config, read every layerdb entry),
a cold sync, a warm open, an incremental sync after 1 % outside changes, prefix search against
raw sqlite3 on the same index, heads/map/children/len, the CLI's ls and ls -a, and peak RSS.
Times are medians of warm-cache runs. It prints a table, writes docs/benchmarks.md and, with
matplotlib installed (the ``bench`` extra), docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import imagestore

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
SEED = 1

Results = dict[str, dict[int, float]]


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generate(workdir: Path, n: int) -> Path:
    target = workdir / f"store-{n}"
    root = target / "image" / "vfs"
    if (target / "gen-summary.json").exists():
        return root
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, str(HERE / "gen_imagedb.py"), str(target), str(n),
                    "--seed", str(SEED)], check=True, stdout=subprocess.DEVNULL)
    return root


def floor(root: Path) -> None:
    """What any restore must at least do, in plain Python."""
    content = f"{root}/imagedb/content/sha256/"
    for name in os.listdir(content):
        with open(content + name, "rb") as f:
            data = f.read()
        hashlib.sha256(data).hexdigest()
        json.loads(data)
    layers = f"{root}/layerdb/sha256/"
    for name in os.listdir(layers):
        for part in ("diff", "size", "cache-id", "parent"):
            try:
                with open(f"{layers}{name}/{part}", "rb") as f:
                    f.read()
            except FileNotFoundError:
                pass


def probe(root: Path, index: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.probe", "open", str(root), str(index)],
                         check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    result: dict[str, float] = json.loads(out)
    return result


def drop_index(index: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(index) + suffix).unlink(missing_ok=True)


def mutate(root: Path, rng: random.Random, share: float = 0.01) -> int:
    """Outside changes to ``share`` of the images: a third added, removed, re-parented."""
    content = root / "imagedb" / "content" / "sha256"
    names = sorted(os.listdir(content))
    k = max(3, int(len(names) * share))
    for name in rng.sample(names, k // 3):  # add: a sibling config on the same layers
        cfg = json.loads((content / name).read_bytes())
        cfg["comment"] = f"bench {rng.getrandbits(64):x}"
        data = json.dumps(cfg, separators=(",", ":")).encode()
        (content / hashlib.sha256(data).hexdigest()).write_bytes(data)
    for name in rng.sample(names, k // 3):  # remove
        (content / name).unlink(missing_ok=True)
        shutil.rmtree(root / "imagedb" / "metadata" / "sha256" / name, ignore_errors=True)
    alive = sorted(os.listdir(content))
    for name in rng.sample(alive, k // 3):  # re-parent
        meta = root / "imagedb" / "metadata" / "sha256" / name
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "parent").write_text("sha256:" + rng.choice(alive))
    return k


def cli_time(root: Path, index: Path, *args: str, repeat: int) -> float:
    cmd = [sys.executable, "-m", "imagestore.cli", "--root", str(root), "--index", str(index),
           "--readonly", "ls", *args]
    return median_time(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL),
                       repeat)


def measure(workdir: Path, n: int, repeat: int, results: Results, rss: Results) -> None:
    def put(name: str, value: float) -> None:
        results.setdefault(name, {})[n] = value

    root = generate(workdir, n)
    index = workdir / f"index-{n}.sqlite"
    rng = random.Random(n)
    put("floor", median_time(lambda: floor(root), repeat))
    cold = []
    for _ in range(repeat):
        drop_index(index)
        cold.append(probe(root, index))
    put("cold sync", statistics.median(c["seconds"] for c in cold))
    rss.setdefault("cold sync", {})[n] = max(c["rss_mb"] for c in cold)
    rss.setdefault("cold sync, largest worker", {})[n] = max(c["worker_rss_mb"] for c in cold)
    warm = [probe(root, index) for _ in range(repeat)]
    put("warm open", statistics.median(w["seconds"] for w in warm))
    rss.setdefault("warm open", {})[n] = max(w["rss_mb"] for w in warm)
    incremental = []
    for _ in range(repeat):
        mutate(root, rng)
        incremental.append(probe(root, index)["seconds"])
    put("incremental sync 1%", statistics.median(incremental))

    with imagestore.open(root, index, readonly=True) as store:
        ids = sorted(store.map())
        prefixes = [rng.choice(ids)[7:19] for _ in range(2000)]
        put("search (per op)", median_time(lambda: [store.search(p) for p in prefixes],
                                           repeat) / len(prefixes))
        conn = sqlite3.connect(index)
        sql = "SELECT id FROM images WHERE id >= ? AND id < ? ORDER BY id LIMIT 2"

        def raw() -> None:
            for p in prefixes:
                conn.execute(sql, ("sha256:" + p, "sha256:" + p + "g")).fetchall()

        put("raw sqlite3 prefix (per op)", median_time(raw, repeat) / len(prefixes))
        conn.close()
        put("heads()", median_time(store.heads, repeat))
        put("map()", median_time(store.map, repeat))
        sample = rng.sample(ids, min(1000, len(ids)))
        put("children() (per op)",
            median_time(lambda: [store.children(i) for i in sample], repeat) / len(sample))
        put("len()", median_time(lambda: len(store), repeat))
    put("cli ls", cli_time(root, index, repeat=repeat))
    put("cli ls -a", cli_time(root, index, "-a", repeat=repeat))


def exponent(series: dict[int, float]) -> float | None:
    sizes = sorted(series)
    if len(sizes) < 2 or series[sizes[0]] <= 0:
        return None
    lo, hi = sizes[0], sizes[-1]
    return math.log(series[hi] / series[lo]) / math.log(hi / lo)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


# (ratio, how it is computed, target as the issue states it, limit at size N)
TARGETS: list[tuple[str, Callable[[Results, Results, int], float], str, Callable[[int], float]]] = [
    ("cold sync / floor", lambda r, m, n: r["cold sync"][n] / r["floor"][n], "≤ 1.5",
     lambda n: 1.5),
    ("warm open / cold sync", lambda r, m, n: r["warm open"][n] / r["cold sync"][n],
     "≤ 0.02 (≤ 0.05 up to 20k)", lambda n: 0.05 if n <= 20_000 else 0.02),
    ("incremental 1% / cold sync",
     lambda r, m, n: r["incremental sync 1%"][n] / r["cold sync"][n], "≤ 0.05", lambda n: 0.05),
    ("search / raw sqlite3",
     lambda r, m, n: r["search (per op)"][n] / r["raw sqlite3 prefix (per op)"][n], "≤ 5",
     lambda n: 5),
    ("heads() / floor", lambda r, m, n: r["heads()"][n] / r["floor"][n], "≤ 0.25",
     lambda n: 0.25),
    ("peak RSS cold sync (MB)", lambda r, m, n: m["cold sync"][n], "≤ 150", lambda n: 150),
    ("cli ls warm (s)", lambda r, m, n: r["cli ls"][n], "< 2", lambda n: 2),
]


def render(results: Results, rss: Results, sizes: list[int]) -> str:
    head = "| measure | " + " | ".join(f"N = {n:,}" for n in sizes) + " | growth exponent |"
    lines = [head, "|" + " --- |" * (len(sizes) + 2)]
    for name, series in results.items():
        exp = exponent(series)
        cells = [fmt_time(series[n]) for n in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {exp:.2f} |"
                     if exp is not None else f"| {name} | " + " | ".join(cells) + " | |")
    for name, series in rss.items():
        lines.append(f"| peak RSS, {name} | "
                     + " | ".join(f"{series[n]:.0f} MB" if series[n] else "no workers"
                                  for n in sizes) + " | |")
    lines += ["", "| ratio (same run) | target | " + " | ".join(f"N = {n:,}" for n in sizes)
              + " |", "|" + " --- |" * (len(sizes) + 2)]
    for name, fn, target, limit in TARGETS:
        cells = []
        for n in sizes:
            value = fn(results, rss, n)
            cells.append(f"{value:.3g} {'✅' if value <= limit(n) else '❌'}")
        lines.append(f"| {name} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Results, sizes: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 6))
    styles = ["-", "--", ":"]
    markers = ["o", "s", "^", "D"]
    for i, (name, series) in enumerate(results.items()):
        ax.plot(sizes, [series[n] for n in sizes], label=name, linestyle=styles[i // 10 % 3],
                marker=markers[i % 4])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images in the store")
    ax.set_ylabel("seconds (per op where noted)")
    ax.set_title("imagestore: time against store size (log-log)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, SQLite "
            f"{sqlite3.sqlite_version}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,20000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-bench"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: Results = {}
    rss: Results = {}
    for n in sizes:
        print(f"measuring N = {n:,} …", file=sys.stderr, flush=True)
        measure(args.workdir, n, args.repeat, results, rss)
    table = render(results, rss, sizes)
    print(table)
    if args.no_write:
        return
    DOCS.mkdir(exist_ok=True)
    png = plot(results, sizes, DOCS / "benchmarks.png")
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    doc = [
        "# Benchmarks", "",
        f"Measured {stamp} with `python -m bench --sizes {args.sizes} --repeat {args.repeat}` "
        f"on {machine()}.", "",
        "Synthetic stores from `bench/gen_imagedb.py` (seed 1). Times are medians of "
        "warm-cache runs; every ratio compares figures measured in the same run. The *floor* "
        "is plain Python reading, hashing and parsing every config and reading every layerdb "
        "entry. For reference, the issue measured moby v28.5.2 on 100,000 images on this kind "
        "of machine: restore 45.8 s and 345 MiB, `Map()` 17.0 s, `Heads()` 8.5 s, short-ID "
        "search 3.8 µs (not re-measured here: no Go toolchain). Peak RSS is the syncing "
        "process's own; a large pass also runs one worker process per core, whose peak is "
        "shown separately.", "",
        table, "",
    ]
    if png:
        doc += ["![time against store size](benchmarks.png)", ""]
    (DOCS / "benchmarks.md").write_text("\n".join(doc))
    print(f"wrote {DOCS / 'benchmarks.md'}" + (" and benchmarks.png" if png else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
