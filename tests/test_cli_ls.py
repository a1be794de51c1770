"""`imagestore ls` against what Docker 20.10 itself listed for the same store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_helpers import run_cli
from conftest import TRUTH, truth_json, truth_jsonl
from hypothesis import given
from hypothesis import strategies as st

from imagestore.cli.humanize import human_since, human_size, since_formatter


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


def test_ls_quiet_prints_unique_short_ids(capsys: pytest.CaptureFixture[str],
                                          real_root: Path) -> None:
    ids = run_cli(capsys, real_root, "ls", "-q").out.split()
    assert len(ids) == len(set(ids)) == 11  # 13 rows; two images carry two tags each
    assert all(len(i) == 12 for i in ids)


def test_human_size_follows_docker() -> None:
    assert human_size(1982364) == "1.98MB"
    assert human_size(228) == "228B"
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
                           ("2026-11-28T12:34:55Z", "2 days ago"),
                           ("2026-11-28T12:34:57Z", "48 hours ago"),
                           ("2026-11-28T23:59:59.999999999Z", "37 hours ago")):
        assert since(text) == human_since(text, _NOW) == expected
