"""The fleet benchmark (issue #15): many stores synced into one index, side by side.

    python -m bench.fleet [--stores 16] [--images 5000] [--parallel 4] [--repeat 3]
                          [--workdir DIR] [--backends sqlite,postgresql] [--write]

It generates ``--stores`` synthetic stores of ``--images`` images each (bench/gen_imagedb.py,
store *i* with seed 1 + *i*; cached in the workdir between runs), then, on each backend (one
SQLite file; one database on a throwaway PostgreSQL server started here and stopped at the
end):

1. one after the other: every store synced alone into one fresh shared index, each by its own
   ``imagestore --index INDEX --root ROOT --name NAME sync`` process;
2. ``--parallel`` at a time: the same stores into another fresh shared index, a pool keeping
   ``--parallel`` such processes running.

Each process's time and peak RSS (``wait4``: the largest of the process and the worker
processes it reaped) are measured. While the syncs run, a sampler counts the processes
waiting on the index's writers' lock (``/proc/locks`` for SQLite's lock file, ``pg_locks``
for PostgreSQL's advisory locks). Then, on the index holding every store, the cross-store
views against a raw indexed lookup of the same rows, through plain sqlite3 / psycopg
connections: ``layer_stores`` by diff ID against ``layers`` by diff ID, and ``store_summary``'s
images against ``GROUP BY store_id`` over ``images``; first as the syncs left the index, then
after ``ANALYZE`` (SQLite), or (PostgreSQL) after ``VACUUM ANALYZE`` of the tables autovacuum
would pick, then of every table.

Each query's plan (PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)``) is written to
WORKDIR/plans.txt, each process's time and peak RSS to WORKDIR/last-run.json.

It prints markdown tables; ``--write`` puts them in docs/benchmarks.md between the fleet
section's markers (the section is added at the end when it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.docs import write_section
from bench.run import fmt_time

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
SEED = 1  # store i is generated with seed SEED + i; the queries' diff IDs with SEED
PG_PORT = 54331
BEGIN = "<!-- fleet-results:begin (written by python -m bench.fleet --write) -->"
END = "<!-- fleet-results:end -->"
HEADING = "## Several stores in one index (issue #15)"
RSS_TOLERANCE = 1.10  # "as for a store alone": within 10 % of the largest lone sync


# -- the stores --------------------------------------------------------------------------------
def generate(workdir: Path, stores: int, images: int) -> tuple[list[Path], float]:
    """The stores' image roots (generated unless cached) and the seconds spent generating."""
    roots, spent = [], 0.0
    for i in range(stores):
        target = workdir / "stores" / f"n{images}-seed{SEED + i}"
        if not (target / "gen-summary.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            subprocess.run([sys.executable, str(HERE / "gen_imagedb.py"), str(target),
                            str(images), "--seed", str(SEED + i)],
                           check=True, stdout=subprocess.DEVNULL)
            spent += time.perf_counter() - start
        roots.append(target / "image" / "vfs")
    return roots, spent


# -- a throwaway PostgreSQL server -------------------------------------------------------------
def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise SystemExit(f"no PostgreSQL {name} on this machine (use --backends sqlite)")
    return str(found)


class Postgres:
    """A private cluster on a Unix socket in a temporary folder (as tests/pg.py starts one)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="is-fleet-pg-"))
        self.data = self.home / "data"
        self.prefix: list[str] = []
        self.pg_ctl = _pg_binary("pg_ctl")

    def start(self) -> None:
        if os.geteuid() == 0:  # initdb refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.home, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.prefix, _pg_binary("initdb"), "-D", str(self.data), "-A", "trust",
                        "-U", "imagestore", "-E", "UTF8", "--no-locale"],
                       check=True, capture_output=True)
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-l",
                        str(self.home / "server.log"), "-w", "-t", "60", "-o",
                        f"-k {self.home} -c listen_addresses='' -p {PG_PORT}", "start"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgresql://imagestore@/{db}?host={self.home}&port={PG_PORT}"

    def fresh_database(self, db: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
        return self.url(db)

    def cpu_seconds(self) -> float:
        """CPU time of the server: the postmaster (with the backends it reaped) and its live
        processes."""
        try:
            master = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        total = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _proc_stat(int(entry.name))
            if fields is None:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid == master:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == master:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


# -- the machine's load ------------------------------------------------------------------------
def _busy_cpu_seconds() -> float:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(p) for p in parts[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Load:
    """CPU time while a phase ran: this benchmark's processes and its PostgreSQL server's
    (``ours``), and other people's work (``others``: the machine's busy CPU time less ours)."""

    wall: float = 0.0
    ours: float = 0.0
    others: float = 0.0

    @contextlib.contextmanager
    def measure(self, server: Postgres | None) -> Iterator[None]:
        def pg() -> float:
            return server.cpu_seconds() if server is not None else 0.0

        start, busy, own, srv = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds(), pg()
        yield
        ours = (_own_cpu_seconds() - own) + (pg() - srv)
        self.wall += time.perf_counter() - start
        self.ours += ours
        self.others += (_busy_cpu_seconds() - busy) - ours

    def add(self, other: Load) -> None:
        self.wall += other.wall
        self.ours += other.ours
        self.others += other.others

    @property
    def cores(self) -> float:
        """Cores busy with other people's work, on average."""
        return max(0.0, self.others / self.wall) if self.wall else 0.0

    @property
    def our_cores(self) -> float:
        return self.ours / self.wall if self.wall else 0.0


# -- who waits on the writers' lock ------------------------------------------------------------
Counts = tuple[int, int, int]  # processes waiting, of them on the index-wide lock, holding


class LockSampler:
    """Every ``interval`` seconds, how many processes wait on a writers' lock of the index
    and how many hold one; each sum, times the interval, is seconds summed over processes."""

    def __init__(self, count: Callable[[], Counts], interval: float = 0.05) -> None:
        self.count, self.interval = count, interval
        self.waited = self.waited_index = self.held = 0.0
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                waiting, index_wide, holding = self.count()
            except Exception:
                continue
            self.waited += waiting * self.interval
            self.waited_index += index_wide * self.interval
            self.held += holding * self.interval
            self.most = max(self.most, waiting)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sqlite_waiters(lock: Path) -> Callable[[], Counts]:
    """Processes blocked on the ``flock`` of the index's lock file (``->`` in /proc/locks),
    and whether one holds it. SQLite's writers' lock is index-wide."""
    def count() -> Counts:
        try:
            st = os.stat(lock)
        except FileNotFoundError:
            return 0, 0, 0
        key = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
        lines = [line.split() for line in Path("/proc/locks").read_text().splitlines()
                 if key in line]
        waiting = len({f[5] for f in lines if f[1] == "->"})  # their pids
        holding = len({f[4] for f in lines if f[1] != "->"})
        return waiting, waiting, holding
    return count


# A session's locks on the index's database, from pg_locks: advisory locks taken with one key
# (objsubid 1) are the index-wide writers' lock (migrations, a new store's row), with two keys
# (objsubid 2) a store's writers' lock.
PG_LOCKS = """
    SELECT count(*) FILTER (WHERE NOT granted),
           count(*) FILTER (WHERE NOT granted AND locktype = 'advisory' AND objsubid = 1),
           count(*) FILTER (WHERE granted AND locktype = 'advisory')
    FROM pg_locks
    WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
       OR (NOT granted AND locktype = 'transactionid')"""


def pg_waiters(url: str) -> tuple[Callable[[], Counts], Callable[[], None]]:
    """Sessions waiting on any lock of the database (the writers' advisory locks among them),
    and sessions holding a writers' lock."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)

    def count() -> Counts:
        row = conn.execute(PG_LOCKS).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    return count, conn.close


# -- the syncs ---------------------------------------------------------------------------------
@dataclass
class Ran:
    name: str
    seconds: float
    rss_mb: float
    start: float
    end: float


@dataclass
class Phase:
    wall: float
    runs: list[Ran]
    waited: float  # seconds spent waiting on a lock, summed over processes
    waited_index: float  # of which on the index-wide writers' lock
    held: float  # seconds spent holding a writers' lock, summed over processes
    most_waiting: int
    load: Load = field(default_factory=Load)

    @property
    def total(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def rss(self) -> float:
        return max(r.rss_mb for r in self.runs)


def run_syncs(index: str, roots: Sequence[Path], parallel: int, env: dict[str, str],
              logs: Path) -> tuple[float, list[Ran]]:
    """Sync every store into ``index``, ``parallel`` processes at a time; the wall time and
    each process's time and peak RSS (``wait4``: itself and the workers it reaped)."""
    exe = shutil.which("imagestore", path=str(Path(sys.executable).parent)) or "imagestore"
    pending = deque(enumerate(roots))
    running: dict[int, tuple[str, float, subprocess.Popen[bytes], Path]] = {}
    runs: list[Ran] = []
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < parallel:
            i, root = pending.popleft()
            name = f"host-{i:02d}"
            log = logs / f"{name}.stderr"
            with open(log, "wb") as err:
                proc = subprocess.Popen([exe, "--index", index, "--root", str(root), "--name",
                                         name, "sync"], stdout=subprocess.DEVNULL, stderr=err,
                                        env=env)
            running[proc.pid] = (name, time.perf_counter(), proc, log)
        pid, status, usage = os.wait4(-1, 0)
        end = time.perf_counter()
        if pid not in running:
            continue
        name, start, proc, log = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: sync failed ({proc.returncode}): "
                             f"{log.read_text(errors='replace')[-2000:]}")
        runs.append(Ran(name, end - start, usage.ru_maxrss / 1024, start - t0, end - t0))
    return time.perf_counter() - t0, sorted(runs, key=lambda r: r.name)


def drop_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock", ".new"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def phase(backend: str, label: str, roots: Sequence[Path], parallel: int, workdir: Path,
          server: Postgres | None, env: dict[str, str]) -> tuple[Phase, str]:
    """One fresh shared index, every store synced into it; the phase and the index."""
    count: Callable[[], Counts]
    close: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        path = workdir / f"fleet-{label}.sqlite"
        drop_sqlite(path)
        index = str(path)
        count = sqlite_waiters(Path(str(path) + ".lock"))
    else:
        assert server is not None
        index = server.fresh_database(f"fleet_{label}")
        count, close = pg_waiters(index)
    try:
        with LockSampler(count) as sampler:
            wall, runs = run_syncs(index, roots, parallel, env, workdir / "logs" / label)
    finally:
        close()
    return Phase(wall, runs, sampler.waited, sampler.waited_index, sampler.held,
                 sampler.most), index


# -- the cross-store queries -------------------------------------------------------------------
LAYER_VIEW = "SELECT store FROM layer_stores WHERE diff_id = {p}"
LAYER_RAW = "SELECT store_id FROM layers WHERE diff_id = {p}"
SUMMARY_VIEW = "SELECT store, images FROM store_summary"
SUMMARY_RAW = "SELECT store_id, count(*) FROM images GROUP BY store_id"


@dataclass
class Queries:
    state: str = ""
    upkeep: str = ""  # PostgreSQL: what autovacuum had done to the tables, before and after
    images: int = 0
    stores: int = 0
    holders: list[int] = field(default_factory=list)  # stores holding each probed diff ID
    times: dict[str, float] = field(default_factory=dict)  # per query, median seconds


AS_LEFT = "as the syncs left it"
AUTOVACUUM = "after VACUUM ANALYZE of the tables of ≥ 1,000 rows (autovacuum's choice)"
# The states the queries are measured in, after the first: each with what brings the index
# there. Autovacuum's default thresholds (50 + 10 % of the rows changed for ANALYZE, 1,000 +
# 20 % inserted for VACUUM) never select the small tables: ``stores`` keeps no statistics.
STATES = {
    "sqlite": {"after ANALYZE": ["ANALYZE"]},
    "postgresql": {AUTOVACUUM: [], "after VACUUM ANALYZE of every table": ["VACUUM ANALYZE"]},
}


def maintain(backend: str, index: str, state: str) -> None:
    """Bring the index to ``state``: statistics for the planner, and on PostgreSQL the
    visibility map that lets an index-only scan skip the table."""
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(index)) as conn:
            for sql in STATES[backend][state]:
                conn.execute(sql)
            conn.commit()
        return
    import psycopg

    with psycopg.connect(index, autocommit=True) as pg:
        statements = STATES[backend][state]
        if state == AUTOVACUUM:
            big = pg.execute("SELECT relname FROM pg_stat_user_tables WHERE n_live_tup >= 1000 "
                             "ORDER BY relname").fetchall()
            statements = [f'VACUUM ANALYZE "{r[0]}"' for r in big]
        for sql in statements:
            pg.execute(sql)


def autovacuumed(rows: Callable[..., list[Any]]) -> str:
    """Which of the queried tables autovacuum had vacuumed and analyzed."""
    found = rows("SELECT relname, last_autovacuum IS NOT NULL, last_autoanalyze IS NOT NULL "
                 "FROM pg_stat_user_tables WHERE relname IN ('images', 'layers', 'stores') "
                 "ORDER BY relname")
    vacuumed = [r[0] for r in found if r[1]] or ["none"]
    analyzed = [r[0] for r in found if r[2]] or ["none"]
    return f"vacuumed {'+'.join(vacuumed)}, analyzed {'+'.join(analyzed)}"


def query_bench(backend: str, index: str, lookups: int, rounds: int, state: str,
                plans: Path) -> Queries:
    if backend == "sqlite":
        conn: Any = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        p = "?"
    else:
        import psycopg

        conn = psycopg.connect(index, autocommit=True)
        p = "%s"

    def rows(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return list(conn.execute(sql, params).fetchall())

    try:
        out = Queries(state)
        out.images = int(rows("SELECT count(*) FROM images")[0][0])
        out.stores = int(rows("SELECT count(*) FROM stores")[0][0])
        every = sorted(r[0] for r in rows("SELECT DISTINCT diff_id FROM layers"))
        probes = random.Random(SEED).sample(every, min(lookups, len(every)))
        layer_view, layer_raw = LAYER_VIEW.format(p=p), LAYER_RAW.format(p=p)
        for d in probes:  # the same rows both ways
            view, raw = rows(layer_view, (d,)), rows(layer_raw, (d,))
            assert len(view) == len(raw) > 0, (d, view, raw)
            out.holders.append(len({r[0] for r in raw}))
        summary = {r[0]: r[1] for r in rows(SUMMARY_VIEW)}
        raw_summary = {r[0]: r[1] for r in rows(SUMMARY_RAW)}
        assert sorted(summary.values()) == sorted(raw_summary.values()), (summary, raw_summary)

        before = autovacuumed(rows) if backend == "postgresql" else ""

        def lookups_of(sql: str) -> Callable[[], object]:
            return lambda: [conn.execute(sql, (d,)).fetchall() for d in probes]

        def once(sql: str) -> Callable[[], object]:
            return lambda: conn.execute(sql).fetchall()

        cases = {
            "layer_stores by diff ID": (lookups_of(layer_view), len(probes)),
            "raw layers by diff ID": (lookups_of(layer_raw), len(probes)),
            "store_summary images": (once(SUMMARY_VIEW), 1),
            "raw count GROUP BY store_id": (once(SUMMARY_RAW), 1),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(rounds):  # interleaved, alternating order: drift hits both alike
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in order:
                fn, per = cases[name]
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) / per)
        out.times = {name: statistics.median(s) for name, s in samples.items()}
        if backend == "postgresql":
            after = autovacuumed(rows)
            out.upkeep = (f"autovacuum: {before}" if before == after
                          else f"autovacuum: {before} before the rounds, {after} after")
        explain = ("EXPLAIN QUERY PLAN " if backend == "sqlite"
                   else "EXPLAIN (ANALYZE, BUFFERS) ")
        with open(plans, "a") as f:  # after the timing: EXPLAIN ANALYZE runs the query
            for sql, params in ((layer_view, (probes[0],)), (layer_raw, (probes[0],)),
                                (SUMMARY_VIEW, ()), (SUMMARY_RAW, ())):
                f.write(f"-- {backend}, {state}: {sql}\n")
                for row in rows(explain + sql, params):
                    f.write("   " + " ".join(str(c) for c in row) + "\n")
        return out
    finally:
        conn.close()


# -- report ------------------------------------------------------------------------------------
def mark(ok: bool) -> str:
    return "✅" if ok else "❌"


@dataclass
class Backend:
    name: str
    alone: list[Phase] = field(default_factory=list)
    together: list[Phase] = field(default_factory=list)
    load: Load = field(default_factory=Load)
    queries: list[Queries] = field(default_factory=list)


def med(phases: list[Phase], fn: Callable[[Phase], float]) -> float:
    return statistics.median(fn(p) for p in phases)


def render(results: list[Backend], args: argparse.Namespace) -> str:
    par = args.parallel
    lines = [
        f"| backend | one after the other: sum of the {args.stores} syncs (wall) "
        f"| {par} at a time: wall | ratio (target ≤ 1) | one sync: alone / in the pool "
        f"(median) | cores busy with the syncs and the server, one after the other / {par} at "
        f"a time (others' work) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for b in results:
        total = med(b.alone, lambda p: p.total)
        wall = med(b.together, lambda p: p.wall)
        ratio = wall / total
        one = statistics.median(r.seconds for p in b.alone for r in p.runs)
        pooled = statistics.median(r.seconds for p in b.together for r in p.runs)
        lines.append(
            f"| {b.name} | {fmt_time(total)} ({fmt_time(med(b.alone, lambda p: p.wall))}) "
            f"| {fmt_time(wall)} | {ratio:.2f} {mark(ratio <= 1)} "
            f"| {fmt_time(one)} / {fmt_time(pooled)} "
            f"| {med(b.alone, lambda p: p.load.our_cores):.2f} "
            f"({med(b.alone, lambda p: p.load.cores):.2f}) / "
            f"{med(b.together, lambda p: p.load.our_cores):.2f} "
            f"({med(b.together, lambda p: p.load.cores):.2f}) |")
    lines += [
        "",
        f"| backend | one after the other: a writers' lock held (share of the sum of syncs) "
        f"| {par} at a time: waiting on a lock, summed over processes (per sync) "
        f"| of which on the index-wide lock | most waiting at once |",
        "| --- | --- | --- | --- | --- |",
    ]
    for b in results:
        held = med(b.alone, lambda p: p.held)
        waited = med(b.together, lambda p: p.waited)
        lines.append(
            f"| {b.name} | {fmt_time(held)} ({held / med(b.alone, lambda p: p.total):.0%}) "
            f"| {fmt_time(waited)} ({fmt_time(waited / args.stores)}) "
            f"| {fmt_time(med(b.together, lambda p: p.waited_index))} "
            f"| {max(p.most_waiting for p in b.together)} |")
    lines += [
        "",
        f"| backend | peak RSS of one sync, one after the other: median / max "
        f"| {par} at a time: median / max | max / max (target ≤ {RSS_TOLERANCE:.2f}) |",
        "| --- | --- | --- | --- |",
    ]
    for b in results:
        rss_alone = [r.rss_mb for p in b.alone for r in p.runs]
        rss_pooled = [r.rss_mb for p in b.together for r in p.runs]
        ratio = max(rss_pooled) / max(rss_alone)
        lines.append(f"| {b.name} | {statistics.median(rss_alone):.0f} / {max(rss_alone):.0f} MB "
                     f"| {statistics.median(rss_pooled):.0f} / {max(rss_pooled):.0f} MB "
                     f"| {ratio:.2f} {mark(ratio <= RSS_TOLERANCE)} |")
    lines += [
        "",
        "| backend | index | query | median | raw indexed lookup of the same rows "
        "| ratio (target ≤ 10) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for b in results:
        for q in b.queries:
            for view, raw, label in (
                    ("layer_stores by diff ID", "raw layers by diff ID",
                     f"stores holding a diff ID (`layer_stores`; per lookup, {len(q.holders)} "
                     f"diff IDs held by {min(q.holders)} to {max(q.holders)} stores each)"),
                    ("store_summary images", "raw count GROUP BY store_id",
                     "images per store (`store_summary`)")):
                ratio = q.times[view] / q.times[raw]
                upkeep = f" ({q.upkeep})" if q.upkeep and q.state == AS_LEFT else ""
                lines.append(f"| {b.name} | {q.images:,} images, {q.stores} stores, {q.state}"
                             f"{upkeep} "
                             f"| {label} | {fmt_time(q.times[view])} "
                             f"| {fmt_time(q.times[raw])} | {ratio:.2f} {mark(ratio <= 10)} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = ""
    with contextlib.suppress(OSError, SystemExit, subprocess.CalledProcessError):
        pg = ", " + subprocess.run([_pg_binary("pg_ctl"), "--version"], check=True,
                                   capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python "
            f"{sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}{pg}")


def write_doc(text: str) -> None:
    write_section(BEGIN, END, HEADING, text)


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m bench.fleet", description=doc.split("\n")[0])
    ap.add_argument("--stores", type=int, default=16)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each phase (fresh index each); medians are reported")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imagestore-fleet"))
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--lookups", type=int, default=200,
                    help="diff IDs looked up per round")
    ap.add_argument("--rounds", type=int, default=51, help="rounds of each query")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "plans.txt").unlink(missing_ok=True)
    started, load_start = time.perf_counter(), loadavg()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s, load {loadavg()}] {msg}",
              file=sys.stderr, flush=True)

    roots, gen_seconds = generate(args.workdir, args.stores, args.images)
    say(f"{args.stores} stores of {args.images:,} images ready "
        f"({'generated in ' + fmt_time(gen_seconds) if gen_seconds else 'cached'})")
    env = {**os.environ, "XDG_STATE_HOME": str(args.workdir / "state")}
    for var in ("IMAGESTORE_INDEX", "IMAGESTORE_ROOT", "IMAGESTORE_NAME"):
        env.pop(var, None)
    server: Postgres | None = None
    results: list[Backend] = []
    try:
        if "postgresql" in backends:
            server = Postgres()
            server.start()
            say(f"PostgreSQL started in {server.home}")
        for name in backends:
            b = Backend(name)
            results.append(b)
            srv = server if name == "postgresql" else None
            last_index = ""
            for r in range(args.repeat):
                # Alternate which goes first, so a drift in the machine's load hits both.
                order = [("alone", 1), ("together", args.parallel)]
                for label, parallel in (order if r % 2 == 0 else order[::-1]):
                    load = Load()
                    with load.measure(srv):
                        ph, last_index = phase(name, label, roots, parallel, args.workdir,
                                               srv, env)
                    ph.load = load
                    b.load.add(load)
                    (b.alone if label == "alone" else b.together).append(ph)
                    say(f"{name} {label} #{r + 1}: wall {fmt_time(ph.wall)}, sum of syncs "
                        f"{fmt_time(ph.total)}, lock waits {fmt_time(ph.waited)}, "
                        f"peak RSS {ph.rss:.0f} MB, cores busy: ours {load.our_cores:.2f}, "
                        f"others' {load.cores:.2f}")
            for state in (AS_LEFT, *STATES[name]):
                with b.load.measure(srv):
                    if state != AS_LEFT:
                        maintain(name, last_index, state)
                    q = query_bench(name, last_index, args.lookups, args.rounds, state,
                                    args.workdir / "plans.txt")
                b.queries.append(q)
                say(f"{name} queries, {state}: " + ", ".join(
                    f"{k} {fmt_time(v)}" for k, v in q.times.items()))
    finally:
        if server is not None:
            server.stop()
    command = ("python -m bench.fleet " + " ".join(
        f"--{k} {v}" for k, v in (("stores", args.stores), ("images", args.images),
                                  ("parallel", args.parallel), ("repeat", args.repeat))))
    others = ", ".join(f"{b.name} phases {b.load.cores:.2f}" for b in results)
    text = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} with `{command}` on "
        f"{machine()}. Generating the {args.stores} stores "
        + (f"took {fmt_time(gen_seconds)} (not in any figure)." if gen_seconds
           else "was done by an earlier run (cached in the workdir)."),
        "",
        f"Machine load: load average {load_start} at the start, {loadavg()} at the end "
        f"(1, 5, 15 min, this benchmark's own processes included); cores busy with other "
        f"work while the phases ran (busy CPU time in /proc/stat less this benchmark's and "
        f"its PostgreSQL server's): {others}.",
        "",
        f"Times are medians of {args.repeat} runs, each into a fresh index; a *sync* is one "
        f"`imagestore --index INDEX --root ROOT --name NAME sync` process, from its start to "
        f"its exit. *Locks*: every 50 ms, the processes holding a writers' lock and those "
        f"waiting on a lock (`/proc/locks` for SQLite's index-wide lock file; `pg_locks` on "
        f"PostgreSQL, where the index-wide writers' lock is the one-key advisory lock and each "
        f"store's the two-key one), summed over processes. Peak RSS: "
        f"`wait4`'s, the larger of the syncing process and its worker processes. Queries: "
        f"median of {args.rounds} rounds on the index the last run filled, through a plain "
        f"sqlite3 / psycopg connection: first as the syncs left it, then after the upkeep "
        f"the database does or is given (SQLite: `ANALYZE`; PostgreSQL: `VACUUM ANALYZE` of "
        f"the tables autovacuum's default thresholds select, which leave out the small "
        f"`stores`, then of every table). The server runs with its default settings; the "
        f"plans are in WORKDIR/plans.txt.",
        "",
        render(results, args),
    ])
    print(text)
    if args.write:
        write_doc(text)
        say(f"wrote {DOCS / 'benchmarks.md'}")
    say(f"done in {fmt_time(time.perf_counter() - started)}")
    (args.workdir / "last-run.json").write_text(json.dumps({
        b.name: {"alone": [[r.__dict__ for r in p.runs] for p in b.alone],
                 "together": [[r.__dict__ for r in p.runs] for p in b.together],
                 "locks": {"alone": [[p.held, p.waited, p.waited_index] for p in b.alone],
                           "together": [[p.held, p.waited, p.waited_index]
                                        for p in b.together]},
                 "cores": {"alone": [[p.load.our_cores, p.load.cores] for p in b.alone],
                           "together": [[p.load.our_cores, p.load.cores]
                                        for p in b.together]},
                 "others_cores": b.load.cores,
                 "queries": [q.__dict__ for q in b.queries]}
        for b in results}, indent=1))


if __name__ == "__main__":
    main()
