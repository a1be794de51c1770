"""The benchmark: imagestore against its baselines, measured side by side in one run.

    python -m bench [--sizes 1000,10000,20000,100000] [--repeat 3] [--workdir DIR] [--no-write]
    python -m bench containerd [...]   (containerd's image store: bench/containerd.py)
    python -m bench files [...]        (layer file lists and ``which``: bench/files.py)

For each size it generates a synthetic store (bench/gen_imagedb.py, fixed seed), then measures
the plain-Python floor (read + sha256 + json.loads of every config, read every layerdb entry),
a cold sync, a warm open against the system calls the signing scheme needs, an incremental
sync after 1 % new images arrive with their own layers, prefix search against raw sqlite3 on
the same index, heads/map/children/len, the CLI's ls and ls -a, peak RSS, and (at the
smallest size) each warm command against a bare interpreter.
Times are medians of warm-cache runs. It prints a table, writes docs/benchmarks.md and, with
matplotlib installed (the ``bench`` extra), docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
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
from imagestore.moby.digest import chain_id

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
OTHER_SECTIONS = "\n## Several stores in one index"
SEED = 1

Results = dict[str, dict[int, float]]


def run_times(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``, one by one."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(run_times(fn, repeat))


def best_time(fn: Callable[[], object], repeat: int) -> float:
    return min(run_times(fn, repeat))


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


def pull(root: Path, rng: random.Random, share: float = 0.01) -> int:
    """``share`` of the images arrive as a pull brings them: each with one to three new
    layers of its own on top of an existing image's, written as dockerd writes them (a
    folder or file made aside and renamed into place)."""
    content = root / "imagedb" / "content" / "sha256"
    layers = root / "layerdb" / "sha256"
    names = sorted(os.listdir(content))
    k = max(3, int(len(names) * share))
    for name in rng.sample(names, k):
        cfg = json.loads((content / name).read_bytes())
        diff_ids = cfg["rootfs"]["diff_ids"]
        chain = chain_id(diff_ids) or ""
        for _ in range(rng.randint(1, 3)):
            diff = "sha256:" + hashlib.sha256(rng.randbytes(16)).hexdigest()
            parent, chain = chain, ("sha256:" + hashlib.sha256(
                f"{chain} {diff}".encode()).hexdigest() if chain else diff)
            tmp = layers / f"tmp-{rng.getrandbits(64):x}"
            tmp.mkdir()
            (tmp / "diff").write_text(diff)
            (tmp / "size").write_text(str(rng.randint(1, 10**7)))
            (tmp / "cache-id").write_text(hashlib.sha256(rng.randbytes(8)).hexdigest())
            if parent:
                (tmp / "parent").write_text(parent)
            os.rename(tmp, layers / chain[len("sha256:"):])
            diff_ids = [*diff_ids, diff]
        cfg["rootfs"]["diff_ids"] = diff_ids
        cfg["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = json.dumps(cfg, separators=(",", ":")).encode()
        tmp_file = content / f".tmp-{rng.getrandbits(64):x}"
        tmp_file.write_bytes(data)
        os.rename(tmp_file, content / hashlib.sha256(data).hexdigest())
    return k


def stat_floor(root: Path) -> None:
    """The system calls a warm open cannot avoid under the signing scheme, in a plain loop:
    an ``lstat`` of each folder that signs its entries, of each image's metadata folder (and
    the listing that names them), of each mount's files, and of ``repositories.json``."""
    for sub in ("imagedb/content/sha256", "layerdb/sha256", "layerdb/mounts",
                "repositories.json"):
        with contextlib.suppress(FileNotFoundError):
            os.lstat(f"{root}/{sub}")
    meta = f"{root}/imagedb/metadata/sha256/"
    for name in os.listdir(meta):
        os.lstat(meta + name)
    mounts = f"{root}/layerdb/mounts/"
    for name in os.listdir(mounts) if os.path.isdir(mounts) else []:
        for part in ("", "/mount-id", "/init-id", "/parent"):
            with contextlib.suppress(FileNotFoundError):
                os.lstat(mounts + name + part)


# Commands people run by hand and in loops, against a bare interpreter (same run).
COMMANDS = {
    "--help": ["--help"], "ls": ["ls"], "inspect": ["inspect", "{id}"],
    "search": ["search", "{prefix}"], "parent": ["parent", "{id}"],
    "children": ["children", "{id}"], "heads": ["heads"],
    "sql": ["sql", "SELECT count(*) FROM images"],
}


def latency(root: Path, index: Path, repeat: int) -> dict[str, float]:
    """Median wall time of each warm command, and of ``python -c "import sqlite3"``. The
    package's bytecode is compiled first, as ``pip install`` leaves it (a checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module at every call)."""
    compileall.compile_dir(Path(imagestore.__file__).parent, quiet=1)
    with imagestore.open(root, index, readonly=True) as store:
        image_id = sorted(store.heads())[0]
    runs = max(5, repeat * 3)

    def timed(args: list[str]) -> float:
        return median_time(lambda: subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                                                  cwd=HERE.parent), runs)

    out = {"bare python + sqlite3": timed([sys.executable, "-c", "import sqlite3"])}
    for name, args in COMMANDS.items():
        filled = [a.format(id=image_id, prefix=image_id[7:19]) for a in args]
        out[name] = timed([sys.executable, "-m", "imagestore.cli", "--root", str(root),
                           "--index", str(index), "--readonly", *filled])
    return out


def cli_time(root: Path, index: Path, *args: str, repeat: int) -> float:
    cmd = [sys.executable, "-m", "imagestore.cli", "--root", str(root), "--index", str(index),
           "--readonly", "ls", *args]
    return median_time(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL),
                       repeat)


def measure(workdir: Path, n: int, repeat: int, results: Results, rss: Results,
            commands: dict[str, float] | None = None) -> None:
    """Everything at one size; ``commands``: also fill in the command latencies here."""
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
    put("stat floor", median_time(lambda: stat_floor(root), repeat))
    incremental = []
    for _ in range(repeat):
        pull(root, rng)
        time.sleep(2.1)  # past the racy window, as a later open would be
        incremental.append(probe(root, index)["seconds"])
    put("incremental sync 1%", statistics.median(incremental))

    with imagestore.open(root, index, readonly=True) as store:
        ids = sorted(store.map())
        prefixes = [rng.choice(ids)[7:19] for _ in range(2000)]
        put("search (per op)", median_time(lambda: [store.search(p) for p in prefixes],
                                           repeat) / len(prefixes))
        conn = sqlite3.connect(index)
        sql = ("SELECT id FROM images WHERE store_id = ? AND id >= ? AND id < ? ORDER BY id "
               "LIMIT 2")  # the store's rows are one range of the key (store_id, id)
        store_id = store.index.store_id

        def raw() -> None:
            for p in prefixes:
                conn.execute(sql, (store_id, "sha256:" + p, "sha256:" + p + "g")).fetchall()

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
    if commands is not None:
        commands.update(latency(root, index, repeat))


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
    ("warm open / stat floor", lambda r, m, n: r["warm open"][n] / r["stat floor"][n],
     "≤ 1.5", lambda n: 1.5),
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


def render_commands(commands: dict[str, float], n: int) -> str:
    """Command latency against a bare interpreter measured in the same run."""
    bare = commands["bare python + sqlite3"]
    lines = [f"| command (warm, N = {n:,}) | median | times a bare `python -c \"import sqlite3\"` "
             "| target |", "| --- | --- | --- | --- |"]
    for name, seconds in commands.items():
        if name == "bare python + sqlite3":
            lines.append(f"| (bare interpreter) | {fmt_time(seconds)} | 1 | |")
            continue
        limit = 4 if name == "--help" else 8
        ratio = seconds / bare
        lines.append(f"| `{name}` | {fmt_time(seconds)} | {ratio:.1f} "
                     f"{'✅' if ratio <= limit else '❌'} | ≤ {limit} |")
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


# Other benchmarks reachable as ``python -m bench NAME …`` (each also ``python -m bench.NAME``).
SUBCOMMANDS = {"containerd": "bench.containerd", "files": "bench.files", "save": "bench.save"}


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] and given[0] in SUBCOMMANDS:
        import importlib

        importlib.import_module(SUBCOMMANDS[given[0]]).main(given[1:])
        return
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
    commands: dict[str, float] = {}
    for n in sizes:
        print(f"measuring N = {n:,} …", file=sys.stderr, flush=True)
        measure(args.workdir, n, args.repeat, results, rss,
                commands if n == min(sizes) else None)
    table = render(results, rss, sizes) + "\n\n" + render_commands(commands, min(sizes))
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
        "entry; the *stat floor* is a plain loop of the `lstat` calls the signing scheme "
        "needs (README, Consistency). *Incremental sync 1%*: 1 % new images, each with one to "
        "three new layers of its own, as a pull brings them. For reference, the issue measured "
        "moby v28.5.2 on 100,000 images on this kind "
        "of machine: restore 45.8 s and 345 MiB, `Map()` 17.0 s, `Heads()` 8.5 s, short-ID "
        "search 3.8 µs (not re-measured here: no Go toolchain). Peak RSS is the syncing "
        "process's own; a large pass also runs one worker process per core, whose peak is "
        "shown separately.", "",
        table, "",
    ]
    if png:
        doc += ["![time against store size](benchmarks.png)", ""]
    # Sections written by the other benchmarks (bench.fleet, ...) follow ours: kept as they are.
    target = DOCS / "benchmarks.md"
    old = target.read_text() if target.exists() else ""
    kept = old[old.index(OTHER_SECTIONS):] if OTHER_SECTIONS in old else ""
    target.write_text("\n".join(doc) + ("\n" + kept if kept else ""))
    print(f"wrote {DOCS / 'benchmarks.md'}" + (" and benchmarks.png" if png else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
