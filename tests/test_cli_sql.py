"""`imagestore sql`: read-only by construction, and the reporting views as documented."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli
from conftest import TRUTH, truth_json
from snapshot import dump


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM images",
        "UPDATE images SET os = 'x'",
        "INSERT INTO settings VALUES ('a', 'b')",
        "DROP TABLE images",
        "CREATE TABLE x (a)",
        "ATTACH DATABASE '/tmp/evil.sqlite' AS evil",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "VACUUM INTO '/tmp/imagestore-copy.sqlite'",
        "SELECT 1; DELETE FROM images",
        "WITH x AS (SELECT 1) DELETE FROM images",
        "WITH x AS (SELECT 1) INSERT INTO settings SELECT 'a', 'b' FROM x",
        "/* hidden */ DELETE FROM images",
        "select load_extension('/tmp/nothing.so')",
        "REINDEX",
        "ANALYZE",
        "SELECT hex(fts3_tokenizer('simple'))",  # a pointer of the process (issue 23, item 6)
    ],
)
def test_sql_refuses_anything_but_reading(capsys: pytest.CaptureFixture[str], real_root: Path,
                                          index: Path, query: str) -> None:
    assert run_cli(capsys, real_root, "sync", index=index).code == 0
    before = dump(index)
    result = run_cli(capsys, real_root, "sql", query, index=index)
    assert result.code == 1, result.out
    assert result.err.startswith("imagestore: ")
    assert dump(index) == before
    assert not Path("/tmp/imagestore-copy.sqlite").exists()


def test_sql_reads_with_every_format(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    q = "SELECT count(*) AS n FROM images"
    assert run_cli(capsys, real_root, "sql", q, "--json").json() == [{"n": 39}]
    assert run_cli(capsys, real_root, "sql", q, "--csv").out == "n\n39\n"
    assert run_cli(capsys, real_root, "sql", q, "--nl").out == '{"n": 39}\n'
    assert run_cli(capsys, real_root, "sql", q + ";").out.split() == ["n", "39"]
    params = run_cli(capsys, real_root, "sql", "SELECT ? + 1 AS x", "-p", "41", "--json")
    assert params.json() == [{"x": 42}]


def test_image_list_view(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    truth = {t["Id"]: t for t in truth_json("image-inspect.json")}
    rows = run_cli(capsys, real_root, "sql", "SELECT * FROM image_list", "--json").json()
    assert len(rows) == 39
    parents = {t["Parent"] for t in truth.values()}
    for r in rows:
        t = truth[r["id"]]
        assert r["size"] == t["Size"]
        assert (r["parent"] or "") == t["Parent"]
        assert bool(r["is_head"]) == (r["id"] not in parents)
        assert bool(r["is_dangling"]) == (r["id"] not in parents and not t["RepoTags"])
        assert sorted((r["tags"] or "").split(", ") if r["tags"] else []) == sorted(t["RepoTags"])


def test_layer_usage_view(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    truth = truth_json("image-inspect.json")
    rows = run_cli(capsys, real_root, "sql", "SELECT * FROM layer_usage", "--json").json()
    assert len(rows) == 13
    from imagestore.moby.digest import chain_ids

    users: dict[str, set[str]] = {}
    for t in truth:
        for c in chain_ids(t["RootFS"].get("Layers", [])):
            users.setdefault(c, set()).add(t["Id"])
    for r in rows:
        expected = users.get(r["chain_id"], set())
        assert r["images"] == len(expected)
        assert set((r["image_ids"] or "").split(", ")) - {""} == expected
        assert r["shared_bytes"] == r["diff_size"] * max(len(expected) - 1, 0)
    assert sum(r["containers"] for r in rows) == 2


def test_readme_recipes_run(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    shared = run_cli(capsys, real_root, "sql",
                     "SELECT chain_id, images, shared_bytes FROM layer_usage "
                     "ORDER BY images DESC LIMIT 3", "--json").json()
    assert len(shared) == 3 and shared[0]["images"] >= shared[1]["images"]
    old = run_cli(capsys, real_root, "sql",
                  "SELECT id FROM image_list WHERE is_dangling "
                  "AND julianday(created) < julianday('now', '-30 days')", "--json")
    assert old.code == 0
    before_2100 = run_cli(capsys, real_root, "sql",
                          "SELECT id FROM image_list WHERE is_dangling "
                          "AND julianday(created) < julianday('2100-01-01')", "--json").json()
    dangling = (TRUTH / "images-dangling.txt").read_text().split()
    assert [r["id"] for r in before_2100] == dangling  # julianday reads our RFC 3339 times
    before_2000 = run_cli(capsys, real_root, "sql",
                         "SELECT id FROM image_list WHERE is_dangling "
                         "AND julianday(created) < julianday('2000-01-01')", "--json").json()
    assert before_2000 == []


def test_sync_problems_view_lists_skipped_entries(capsys: pytest.CaptureFixture[str],
                                                  real_root: Path) -> None:
    bad = real_root / "imagedb/content/sha256" / ("ab" * 32)
    bad.write_bytes(b"not json")
    rows = run_cli(capsys, real_root, "sql", "SELECT * FROM sync_problems", "--json").json()
    assert [(r["path"], r["kind"]) for r in rows] == [
        ("imagedb/content/sha256/" + "ab" * 32, "digest-mismatch")]


INFINITE = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT max(n) FROM c"


def _cli(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "imagestore.cli", "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_a_query_stops_at_its_timeout(capsys: pytest.CaptureFixture[str],
                                      real_root: Path) -> None:
    started = time.monotonic()
    result = run_cli(capsys, real_root, "sql", INFINITE, "--timeout", "0.5")
    assert result.code == 1
    assert result.err == "imagestore: sql: stopped after 0.5 s (--timeout)\n"
    assert time.monotonic() - started < 30


def _sync(root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "imagestore.cli", "--root", str(root), "sync"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_stops_a_query_cleanly(real_root: Path) -> None:
    """Also when the test run ignores SIGINT (``pytest &`` from a script): the command it
    starts hears Ctrl-C all the same (tests/processes.py), and is never left running."""
    _sync(real_root)
    proc = _cli(real_root, "sql", INFINITE, "--timeout", "0")
    try:
        time.sleep(1.5)  # well into the query
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a query that did not stop must not spin on after the test
        proc.communicate()
    assert proc.returncode == 130
    assert err.strip() == "imagestore: interrupted"  # after the line ^C leaves


def test_rows_stream_in_bounded_memory(real_root: Path) -> None:
    """Two million rows go out as they come: the process never holds them all."""
    _sync(real_root)
    query = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 2000000)"
             " SELECT n, 'some text to make rows wider' AS t FROM c")
    probe = ("import resource, sys\n"
             "from imagestore.cli import main\n"
             "try:\n    main(sys.argv[1:])\n"
             "finally:\n"
             "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
             "    print(peak, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, "--root", str(real_root), "sql", query,
                           "--csv"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.count("\n")
    assert lines == 2000001  # the header and every row
    assert int(done.stderr.split()[-1]) < 150  # held whole, 2 million rows take far more
