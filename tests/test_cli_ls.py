"""`imagestore ls` against what Docker 20.10 itself listed for the same store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import TRUTH, config, truth_json, truth_jsonl
from hypothesis import given
from hypothesis import strategies as st

import imagestore
from imagestore.cli import tabwriter as tw
from imagestore.cli.humanize import human_duration, human_since, human_size, since_formatter


def _docker_rows(name: str) -> set[tuple[str, str, str, str]]:
    return {(r["ID"], r["Repository"], r["Tag"], r["Size"]) for r in truth_jsonl(name)}


def _our_rows(rows: list[dict[str, object]]) -> set[tuple[str, str, str, str]]:
    return {(str(r["id"]), str(r["repository"] or "<none>"), str(r["tag"] or "<none>"),
             human_size(int(r["size"]))) for r in rows}  # type: ignore[call-overload]


def test_ls_matches_docker_images(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    result = run_cli(capsys, real_root, "ls", "--json")
    assert result.code == 0, result.err
    rows = result.json()
    assert len(rows) == len(truth_jsonl("images.jsonl")) == 13
    assert _our_rows(rows) == _docker_rows("images.jsonl")


def test_ls_all_matches_docker_images_a(capsys: pytest.CaptureFixture[str],
                                        real_root: Path) -> None:
    rows = run_cli(capsys, real_root, "ls", "-a", "--json").json()
    assert len(rows) == 41
    assert _our_rows(rows) == _docker_rows("images-all.jsonl")


def test_ls_sizes_parents_and_times_match_the_api(capsys: pytest.CaptureFixture[str],
                                                  real_root: Path) -> None:
    api = {i["Id"]: i for i in truth_json("api/images-json-all.json")}
    rows = run_cli(capsys, real_root, "ls", "-a", "--json").json()
    assert {r["id"] for r in rows} == set(api)
    for row in rows:
        truth = api[row["id"]]
        assert row["size"] == truth["Size"]
        assert (row["parent"] or "") == truth["ParentId"]
        created = datetime.fromisoformat(row["created"][:19]).replace(tzinfo=timezone.utc)
        assert int(created.timestamp()) == truth["Created"]
        assert row["created"].endswith("Z")
        tags = [f"{r['repository']}:{r['tag']}" for r in rows
                if r["id"] == row["id"] and r["tag"]]
        assert sorted(tags) == sorted(t for t in truth["RepoTags"] or [] if t != "<none>:<none>")


@pytest.mark.parametrize("extra", [[], ["-a"]])
def test_ls_dangling_matches_docker(capsys: pytest.CaptureFixture[str], real_root: Path,
                                    extra: list[str]) -> None:
    rows = run_cli(capsys, real_root, "ls", "--dangling", *extra, "--json").json()
    expected = set((TRUTH / "images-dangling.txt").read_text().split())
    assert {r["id"] for r in rows} == expected
    assert all(r["repository"] is None and r["tag"] is None for r in rows)


def test_ls_table_looks_like_docker_images(capsys: pytest.CaptureFixture[str],
                                           real_root: Path) -> None:
    out = run_cli(capsys, real_root, "ls").out.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    body = {(line.split()[0], line.split()[1], line.split()[2]) for line in out[1:]}
    expected = {(r["Repository"], r["Tag"], r["ID"].split(":")[1][:12])
                for r in truth_jsonl("images.jsonl")}
    assert body == expected
    assert any(line.rstrip().endswith("1.98MB") for line in out[1:])


def test_ls_csv_and_nl(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    csv_out = run_cli(capsys, real_root, "ls", "--csv").out.splitlines()
    assert csv_out[0] == "id,repository,tag,created,size,parent"
    assert len(csv_out) == 14
    nl = run_cli(capsys, real_root, "ls", "-a", "--nl").out.splitlines()
    assert len(nl) == 41


def test_ls_quiet_prints_an_id_per_row_like_docker(capsys: pytest.CaptureFixture[str],
                                                  real_root: Path) -> None:
    """docker/cli's quiet format is ``{{.ID}}`` applied to every row, and an image has a row
    per tag: an image with two tags prints its ID twice."""
    ids = run_cli(capsys, real_root, "ls", "-q").out.split()
    assert ids == [r["ID"][7:19] for r in truth_jsonl("images.jsonl")]
    assert len(ids) == 13 and len(set(ids)) == 11
    full = run_cli(capsys, real_root, "ls", "-q", "--no-trunc", "-a").out.split()
    assert sorted(full) == sorted(r["ID"] for r in truth_jsonl("images-all.jsonl"))


def test_human_size_follows_docker() -> None:
    assert human_size(1982364) == "1.98MB"
    assert human_size(228) == "228B"
    assert human_size(1982364, precision=4) == "1.982MB"  # units.HumanSize: prune's total
    assert human_size(12345) == "12.3kB"
    assert human_size(0) == "0B"


_NOW = datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=timezone.utc)


@given(st.lists(st.tuples(st.integers(-10, 3 * 365 * 86400), st.integers(0, 999_999_999)),
                min_size=1, max_size=40))
def test_since_formatter_answers_as_human_since(ages: list[tuple[int, int]]) -> None:
    """One answer per day is reused only where it is exact, day boundaries included."""
    since = since_formatter(_NOW)
    for seconds, nanos in ages:
        when = _NOW - timedelta(seconds=seconds)
        text = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"
        assert since(text) == human_since(text, _NOW)
    # A day that straddles a change of answer is answered instant by instant.
    for text, expected in (("2026-11-28T00:00:00Z", "2 days ago"),
                           ("2026-11-28T13:04:56Z", "2 days ago"),
                           ("2026-11-28T13:04:57Z", "47 hours ago"),
                           ("2026-11-28T23:59:59.999999999Z", "37 hours ago")):
        assert since(text) == human_since(text, _NOW) == expected


# -- row order -------------------------------------------------------------------------------
def _by_second(rows: list[tuple[str, str, str, str]]
               ) -> list[tuple[str, dict[str, list[tuple[str, str]]]]]:
    """(second, id, repository, tag) rows as one group per creation second, each image's rows
    in order. docker sorts images by whole seconds with an unstable sort, so images of one
    second may come in any order; an image's own rows may not, nor may they be split."""
    groups: list[tuple[str, dict[str, list[tuple[str, str]]]]] = []
    last_id = None
    for second, image_id, repo, tag in rows:
        if not groups or groups[-1][0] != second:
            groups.append((second, {}))
        images = groups[-1][1]
        assert image_id == last_id or image_id not in images, f"{image_id}'s rows are split"
        images.setdefault(image_id, []).append((repo, tag))
        last_id = image_id
    return groups


@pytest.mark.parametrize(("truth", "extra"), [("images.jsonl", []),
                                              ("images-all.jsonl", ["-a"])])
def test_ls_rows_come_in_docker_order(capsys: pytest.CaptureFixture[str], real_root: Path,
                                      truth: str, extra: list[str]) -> None:
    docker = [(r["CreatedAt"][:19], r["ID"], r["Repository"], r["Tag"])
              for r in truth_jsonl(truth)]
    rows = run_cli(capsys, real_root, "ls", *extra, "--json").json()
    ours = [(r["created"][:19].replace("T", " "), r["id"], r["repository"] or "<none>",
             r["tag"] or "<none>") for r in rows]
    assert _by_second(ours) == _by_second(docker)
    devbase = [r["tag"] for r in rows if r["repository"] == "devbase"]
    assert devbase == ["1.0", "latest"]  # the reference store's order, not reversed


def _refs_root(root: Path, index: Path, refs: dict[str, list[str]], **extra: Any) -> str:
    with imagestore.open(root, index=index) as store:
        image_id = store.create(config("refs", created="2026-01-02T03:04:05Z", **extra))
    doc = {repo: {ref: image_id for ref in names} for repo, names in refs.items()}
    (root / "repositories.json").write_text(json.dumps({"Repositories": doc}))
    return image_id


def test_ls_rows_of_one_image_follow_the_reference_store(capsys: pytest.CaptureFixture[str],
                                                         empty_root: Path,
                                                         index: Path) -> None:
    """moby sorts references by normalised name (docker.io/library/zeta before localhost/a);
    docker/cli shows a row per tag grouped by repository, then one `<none>` row per
    repository holding only digests."""
    digest = "sha256:" + "b" * 64
    _refs_root(empty_root, index, {
        "zeta": ["zeta:2", "zeta:10", f"zeta@{digest}"],
        "localhost/a": ["localhost/a:1"],
        "registry.example.com/x": [f"registry.example.com/x@{digest}"],
    })
    rows = run_cli(capsys, empty_root, "ls", "--json", index=index).json()
    assert [(r["repository"], r["tag"]) for r in rows] == [
        ("zeta", "10"), ("zeta", "2"), ("localhost/a", "1"), ("registry.example.com/x", None)]


def test_ls_dangling_keeps_heads_with_only_digests(capsys: pytest.CaptureFixture[str],
                                                   empty_root: Path, index: Path) -> None:
    """moby's dangling=true filter drops a head only when it has a tag."""
    digest = "sha256:" + "c" * 64
    _refs_root(empty_root, index, {"web": [f"web@{digest}"]})
    rows = run_cli(capsys, empty_root, "ls", "--dangling", "--json", index=index).json()
    assert [(r["repository"], r["tag"]) for r in rows] == [("web", None)]


# -- the table: Go's text/tabwriter as docker/cli sets it up ------------------------------------
def _docker_layout(cells: list[list[str]]) -> list[str]:
    """tabwriter.NewWriter(out, 10, 1, 3, ' ', 0) on rows of equal length: every column but
    the last is as wide as its widest cell plus 3, and at least 10."""
    widths = [max(10, max(len(c) for c in column) + 3)
              for column in list(zip(*cells, strict=True))[:-1]]
    return ["".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + row[-1]
            for row in cells]


@pytest.mark.parametrize("extra", [[], ["-a"], ["--dangling"], ["--no-trunc"]])
def test_ls_table_is_docker_tabwriter_layout(capsys: pytest.CaptureFixture[str],
                                             real_root: Path, extra: list[str]) -> None:
    out = run_cli(capsys, real_root, "ls", *extra).out
    rows = run_cli(capsys, real_root, "ls", *extra, "--json").json()
    since = since_formatter()
    cells = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]] + [
        [r["repository"] or "<none>", r["tag"] or "<none>",
         r["id"] if "--no-trunc" in extra else r["id"][7:19], since(r["created"]),
         human_size(r["size"])] for r in rows]
    assert out.splitlines() == _docker_layout(cells)
    assert out.endswith("SIZE\n") is False and out.endswith("\n")
    if extra == ["--dangling"]:  # short cells: the minimum width of 10 shows
        assert out.splitlines()[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")


def _b(text: str) -> bytes:
    """A Go string literal's bytes: UTF-8, with \\xff as the raw escape byte."""
    return text.encode("utf-8").replace(b"\xc3\xbf", b"\xff")


# Cases of Go's own text/tabwriter tests (src/text/tabwriter/tabwriter_test.go):
# (minwidth, tabwidth, padding, padchar, flags, input, expected).
GO_CASES: list[tuple[int, int, int, str, int, str, str]] = [
    (8, 0, 1, ".", 0, "", ""),
    (8, 0, 1, ".", tw.STRIP_ESCAPE, "\xff\xff", ""),
    (8, 0, 1, ".", 0, "\xff\t\xff", "\xff\t\xff"),
    (8, 0, 1, ".", tw.STRIP_ESCAPE, "\xff\"foo\t\n\tbar\"\xff", "\"foo\t\n\tbar\""),
    (8, 0, 1, ".", tw.STRIP_ESCAPE, "abc\xff\tdef", "abc\tdef"),
    (8, 0, 1, ".", 0, "abc\xff\tdef", "abc\xff\tdef"),
    (8, 0, 1, ".", 0, "\n\n\n", "\n\n\n"),
    (8, 0, 1, ".", 0, "a\nb\nc", "a\nb\nc"),
    (8, 0, 1, ".", 0, "\t", ""),
    (8, 0, 1, ".", tw.ALIGN_RIGHT, "\t", ""),
    (8, 0, 1, ".", 0, "*\t*", "*.......*"),
    (8, 0, 1, ".", 0, "*\t*\t", "*.......*"),
    (8, 0, 1, ".", tw.DEBUG, "*\t*\t", "*.......|*"),
    (8, 0, 1, ".", tw.ALIGN_RIGHT, "*\t*\t", ".......**"),
    (8, 0, 1, ".", 0, "\t\n", "........\n"),
    (8, 0, 1, " ", 0, "b) foo\tbar", "b) foo  bar"),
    (8, 0, 1, ".", 0, "e) foo\tbar\t\n", "e) foo..bar.....\n"),
    (8, 0, 1, ".", tw.FILTER_HTML, "f) f&lt;o\t<b>bar</b>\t\n", "f) f&lt;o..<b>bar</b>.....\n"),
    (8, 0, 1, ".", tw.FILTER_HTML | tw.DEBUG,
     "g) f&lt;o\t<b>bar</b>\t non-terminated entity &amp",
     "g) f&lt;o..|<b>bar</b>.....| non-terminated entity &amp"),
    (1, 0, 0, ".", 0, "1\t2\t3\t4\n11\t222\t3333\t44444\n", "1.2..3...4\n11222333344444\n"),
    (1, 0, 0, ".", tw.FILTER_HTML, "1\t2<!---\f--->\t3\t4\n11\t222\t3333\t44444\n",
     "1.2<!---\f--->..3...4\n11222333344444\n"),
    (1, 0, 0, ".", 0, "1\t2\t3\t4\f11\t222\t3333\t44444\n", "1234\n11222333344444\n"),
    (1, 0, 0, ".", tw.DEBUG, "1\t2\t3\t4\f11\t222\t3333\t44444\n",
     "1|2|3|4\n---\n11|222|3333|44444\n"),
    (5, 0, 0, ".", 0, "1\t2\t3\t4\t\n", "1....2....3....4....\n"),
    (8, 0, 1, ".", 0, "本\tb\tc\naa\t本本本\tcccc\tddddd\naaa\tbbbb\n",
     "本.......b.......c\naa......本本本.....cccc....ddddd\naaa.....bbbb\n"),
    (8, 0, 1, " ", tw.ALIGN_RIGHT, "a\tè\tc\t\naa\tèèè\tcccc\tddddd\t\naaa\tèèèè\t\n",
     "       a       è       c\n      aa     èèè    cccc   ddddd\n     aaa    èèèè\n"),
    (2, 0, 0, " ", 0, "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n", "a  b  c\naa bbbcccc\naaabbbb\n"),
    (4, 0, 1, "-", 0,
     "4444\t日本語\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
     "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n",
     "4444------日本語-22--1---333\n999999999-22\n7---------22\n------------------88888888\n\n"
     "666666-666666-666666----4444\n1------1------999999999-0000000000\n"),
    (4, 0, 3, ".", 0,
     "4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
     "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n",
     "4444........333...22...1...333\n999999999...22\n7...........22\n"
     "....................88888888\n\n666666...666666...666666......4444\n"
     "1........1........999999999...0000000000\n"),
    (8, 8, 1, "\t", tw.FILTER_HTML,
     "4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
     "666666\t666666\t666666\t4444\n"
     "1\t1\t<font color=red attr=日本語>999999999</font>\t0000000000\n",
     "4444\t\t333\t22\t1\t333\n999999999\t22\n7\t\t22\n\t\t\t\t88888888\n\n"
     "666666\t666666\t666666\t\t4444\n"
     "1\t1\t<font color=red attr=日本語>999999999</font>\t0000000000\n"),
    (1, 0, 2, " ", tw.ALIGN_RIGHT,
     ".0\t.3\t2.4\t-5.1\t\n23.0\t12345678.9\t2.4\t-989.4\t\n5.1\t12.0\t2.4\t-7.0\t\n"
     ".0\t0.0\t332.0\t8908.0\t\n.0\t-.3\t456.4\t22.1\t\n.0\t1.2\t44.4\t-13.3\t\t",
     "    .0          .3    2.4    -5.1\n  23.0  12345678.9    2.4  -989.4\n"
     "   5.1        12.0    2.4    -7.0\n    .0         0.0  332.0  8908.0\n"
     "    .0         -.3  456.4    22.1\n    .0         1.2   44.4   -13.3"),
    (4, 0, 0, ".", 0, "a\t\tb", "a.......b"),
    (4, 0, 0, ".", tw.DISCARD_EMPTY_COLUMNS, "a\t\tb", "a.......b"),
    (4, 0, 0, ".", tw.DISCARD_EMPTY_COLUMNS, "a\v\vb", "a...b"),
    (4, 0, 0, ".", tw.ALIGN_RIGHT | tw.DISCARD_EMPTY_COLUMNS, "a\v\vb", "...ab"),
    (100, 100, 0, "\t", tw.DISCARD_EMPTY_COLUMNS,
     "a\vb\v\vd\na\vb\v\vd\ve\na\na\vb\vc\vd\na\vb\vc\vd\ve\n",
     "a\tb\td\na\tb\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n"),
    (100, 100, 0, "\t", tw.DISCARD_EMPTY_COLUMNS | tw.DEBUG,
     "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
     "a\t|b\t|\t|d\na\t|b\t|\t|d\t|e\na\na\t|b\t|c\t|d\na\t|b\t|c\t|d\t|e\n"),
]


@pytest.mark.parametrize("case", GO_CASES, ids=[str(i) for i in range(len(GO_CASES))])
def test_tabwriter_answers_as_go(case: tuple[int, int, int, str, int, str, str]) -> None:
    """Written at once, byte by byte and in slices of growing size, as Go's test does."""
    minwidth, tabwidth, padding, padchar, flags, src, expected = case
    data = _b(src)
    for size_of in (len(data), 1, 0):
        writer = tw.TabWriter(minwidth, tabwidth, padding, padchar, flags)
        if size_of:
            for i in range(0, len(data), size_of):
                writer.write(data[i:i + size_of])
        else:  # growing slices: 0, 1, 2, ... bytes
            i = d = 0
            while i < len(data):
                writer.write(data[i:i + d])
                i, d = i + d, d + 1
                d = min(d, len(data) - i)
        writer.flush()
        assert writer.getvalue() == _b(expected)


_CELL = st.text(alphabet="ab本\t\n\v\udcff ", max_size=12)


@given(st.integers(1, 5).flatmap(
    lambda n: st.lists(st.lists(_CELL, min_size=n, max_size=n), max_size=8))
    | st.lists(st.lists(_CELL, min_size=0, max_size=5), max_size=8))
def test_tabwriter_table_is_the_writer(rows: list[list[str]]) -> None:
    """table() lays out rows of equal length without the writer when no cell holds a
    separator; the answer is the writer's."""
    text = "".join("\t".join(r) + "\n" for r in rows)
    assert tw.table(rows) == tw.render(text, *tw.DOCKER_TABLE)


# -- CREATED: go-units' HumanDuration ----------------------------------------------------------
_S, _M, _H = 10**9, 60 * 10**9, 3600 * 10**9
_DAY, _WEEK, _MONTH, _YEAR = 24 * _H, 7 * 24 * _H, 30 * 24 * _H, 365 * 24 * _H


@pytest.mark.parametrize(("d", "expected"), [
    # docker/go-units duration_test.go, TestHumanDuration
    (450 * 10**6, "Less than a second"), (1 * _S, "1 second"), (45 * _S, "45 seconds"),
    (46 * _S, "46 seconds"), (59 * _S, "59 seconds"), (60 * _S, "About a minute"),
    (3 * _M, "3 minutes"), (35 * _M, "35 minutes"), (35 * _M + 40 * _S, "35 minutes"),
    (45 * _M, "45 minutes"), (45 * _M + 40 * _S, "45 minutes"), (46 * _M, "46 minutes"),
    (59 * _M, "59 minutes"), (1 * _H, "About an hour"), (1 * _H + 29 * _M, "About an hour"),
    (1 * _H + 31 * _M, "2 hours"), (1 * _H + 59 * _M, "2 hours"), (3 * _H, "3 hours"),
    (3 * _H + 29 * _M, "3 hours"), (3 * _H + 31 * _M, "4 hours"),
    (3 * _H + 59 * _M, "4 hours"), (3 * _H + 60 * _M, "4 hours"), (24 * _H, "24 hours"),
    (1 * _DAY + 12 * _H, "36 hours"), (2 * _DAY, "2 days"), (7 * _DAY, "7 days"),
    (13 * _DAY + 5 * _H, "13 days"), (2 * _WEEK, "2 weeks"), (2 * _WEEK + 4 * _DAY, "2 weeks"),
    (3 * _WEEK, "3 weeks"), (4 * _WEEK, "4 weeks"), (4 * _WEEK + 3 * _DAY, "4 weeks"),
    (1 * _MONTH, "4 weeks"), (1 * _MONTH + 2 * _WEEK, "6 weeks"), (2 * _MONTH, "2 months"),
    (2 * _MONTH + 2 * _WEEK, "2 months"), (3 * _MONTH, "3 months"),
    (3 * _MONTH + 1 * _WEEK, "3 months"), (5 * _MONTH + 2 * _WEEK, "5 months"),
    (13 * _MONTH, "13 months"), (23 * _MONTH, "23 months"), (24 * _MONTH, "24 months"),
    (24 * _MONTH + 2 * _WEEK, "2 years"), (3 * _YEAR + 2 * _MONTH, "3 years"),
    # the boundaries between them
    (-5 * _S, "Less than a second"), (_S - 1, "Less than a second"), (2 * _S - 1, "1 second"),
    (_M - 1, "59 seconds"), (2 * _M - 1, "About a minute"), (2 * _M, "2 minutes"),
    (_H - 1, "59 minutes"), (90 * _M - 1, "About an hour"), (90 * _M, "2 hours"),
    (47 * _H + 30 * _M - 1, "47 hours"), (47 * _H + 30 * _M, "2 days"),  # not "48 hours"
    (71 * _H + 30 * _M - 1, "2 days"), (71 * _H + 30 * _M, "3 days"),
    (335 * _H + 30 * _M - 1, "13 days"), (335 * _H + 30 * _M, "2 weeks"),
    (1439 * _H + 30 * _M - 1, "8 weeks"), (1439 * _H + 30 * _M, "2 months"),
    (17519 * _H + 30 * _M - _S, "24 months"), (17519 * _H + 30 * _M, "1 years"),
    (17520 * _H, "2 years"), ((1 << 63) - 1, "292 years"),
    # Hours() is float64 in Go too: 1 ns short of 17519.5 h rounds to 17519.5
    (17519 * _H + 30 * _M - 1, "1 years"),
])
def test_human_duration_is_go_units(d: int, expected: str) -> None:
    assert human_duration(d) == expected


def test_created_counts_from_the_creation_second() -> None:
    """The API hands docker/cli whole Unix seconds: 0.6 s after 11:59:59.9 is 1.5 s after
    11:59:59, "1 second ago"."""
    now = datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)
    assert human_since("2026-01-01T11:59:59.9Z", now) == "1 second ago"
    assert human_since("2026-01-01T12:00:00.4Z", now) == "Less than a second ago"
    assert human_since("2026-01-02T00:00:00Z", now) == "Less than a second ago"  # future


@pytest.mark.parametrize(("created", "expected"), [
    ("0001-01-01T00:00:00Z", "N/A"), ("0001-01-01T00:00:00.999999999Z", "N/A"),
    (None, "N/A"), ("", "N/A"),
    ("0001-01-01T00:00:01Z", "292 years ago"),  # time.Sub saturates at 292 years
    ("1500-06-01T00:00:00Z", "292 years ago"),
])
def test_no_creation_time_reads_n_a(created: str | None, expected: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert human_since(created, now) == expected
    assert since_formatter(now)(created) == expected


def test_ls_shows_n_a_for_the_zero_time(capsys: pytest.CaptureFixture[str], empty_root: Path,
                                        index: Path) -> None:
    with imagestore.open(empty_root, index=index) as store:
        store.create(config("zero", created="0001-01-01T00:00:00Z"))
        store.create(config("none"))
    lines = run_cli(capsys, empty_root, "ls", index=index).out.splitlines()
    assert len(lines) == 3
    assert all(line.split()[3] == "N/A" for line in lines[1:])
