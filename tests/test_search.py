"""Prefix search: moby's digest-set ``Lookup`` (docs/moby-semantics.md §4, §5.6)."""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

import imagestore
from imagestore import AmbiguousImageID, ImageNotFound
from imagestore.moby.digest import digest_of

OpenStore = Callable[..., imagestore.Store]
Outcome = tuple[str, str | None]  # ("found", id) | ("ambiguous", None) | ("notfound", None)
HEXCHARS = "0123456789abcdef"
N_IMAGES = 1500

D = [
    "sha256:1234511111111111111111111111111111111111111111111111111111111111",
    "sha256:1234111111111111111111111111111111111111111111111111111111111111",
    "sha256:1234611111111111111111111111111111111111111111111111111111111111",
    "sha256:5432111111111111111111111111111111111111111111111111111111111111",
    "sha256:6543111111111111111111111111111111111111111111111111111111111111",
    "sha256:6432111111111111111111111111111111111111111111111111111111111111",
    "sha256:6542111111111111111111111111111111111111111111111111111111111111",
    "sha256:6532111111111111111111111111111111111111111111111111111111111111",
]


# -- an independent model of go-digest's digestset.Lookup ------------------------------------
def _parse(term: str) -> tuple[str, str]:
    """(algorithm, hex) as Lookup sees them; an invalid *format* means "use verbatim"."""
    i = term.find(":")
    if i <= 0 or i + 1 == len(term):
        return "", term
    alg, rest = term[:i], term[i + 1 :]
    if alg == "sha256":
        if len(rest) == 64 and any(c not in HEXCHARS for c in rest):
            return "", term
        return alg, rest  # wrong length is an "invalid length" error: the split is kept
    return alg, rest  # unsupported (or badly formed) algorithm: never matches a sha256 entry


def _short_match(alg: str, hex_: str, short_alg: str, short_hex: str) -> bool:
    if len(hex_) == len(short_hex):
        if hex_ != short_hex:
            return False
    elif not hex_.startswith(short_hex):
        return False
    return not (short_alg and alg != short_alg)


@functools.lru_cache(maxsize=8)
def _entries(digests: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The set's sorted slice: (hex, algorithm, digest), ordered by hex then algorithm."""
    return sorted((d.split(":", 1)[1], d.split(":", 1)[0], d) for d in digests)


def moby_lookup(digests: list[str], term: str) -> Outcome:
    entries = _entries(tuple(digests))
    if not entries:
        return ("notfound", None)
    alg, hex_ = _parse(term)
    # sort.Search for the first entry with val > hex, or val == hex and alg >= alg.
    idx = bisect.bisect_left(entries, (hex_, alg), key=lambda e: (e[0], e[1]))
    if idx == len(entries) or not _short_match(entries[idx][1], entries[idx][0], alg, hex_):
        return ("notfound", None)
    if entries[idx][1] == alg and entries[idx][0] == hex_:
        return ("found", entries[idx][2])
    if idx + 1 < len(entries) and _short_match(entries[idx + 1][1], entries[idx + 1][0], alg,
                                               hex_):
        return ("ambiguous", None)
    return ("found", entries[idx][2])


def store_lookup(store: imagestore.Store, term: str) -> Outcome:
    try:
        return ("found", store.search(term))
    except AmbiguousImageID:
        return ("ambiguous", None)
    except ImageNotFound:
        return ("notfound", None)


def expected(ids: list[str], term: str) -> Outcome:
    # The contract's one deviation (docs/moby-semantics.md §7): "" never answers (moby returns a
    # one-image store's image).
    if term == "":
        return ("notfound", None)
    return moby_lookup(ids, term)


@pytest.mark.parametrize(
    ("term", "outcome"),
    [
        ("54", ("found", D[3])),
        ("1234", ("ambiguous", None)),
        ("9876", ("notfound", None)),
        ("sha256:1234", ("ambiguous", None)),
        ("sha256:12345", ("found", D[0])),
        ("sha256:12346", ("found", D[2])),
        ("12346", ("found", D[2])),
        ("12345", ("found", D[0])),
        ("64", ("found", D[5])),
        ("653", ("found", D[7])),
        ("65", ("ambiguous", None)),
    ],
)
def test_model_passes_moby_test_lookup(term: str, outcome: Outcome) -> None:
    """The oracle below reproduces digestset TestLookup, so comparing against it means parity."""
    assert moby_lookup(D, term) == outcome


def test_model_edge_rules() -> None:
    assert moby_lookup([], "1") == ("notfound", None)
    assert moby_lookup(D[:1], "") == ("found", D[0])
    assert moby_lookup(D, "") == ("ambiguous", None)
    assert moby_lookup(D, "sha256:") == ("notfound", None)
    assert moby_lookup(D, "md5:54") == ("notfound", None)
    assert moby_lookup(D, D[3].split(":")[1]) == ("found", D[3])
    assert moby_lookup(D, D[3]) == ("found", D[3])


# -- stores to search ------------------------------------------------------------------------
def _write_configs(root: Path, docs: list[bytes]) -> list[str]:
    content = root / "imagedb" / "content" / "sha256"
    ids = []
    for raw in docs:
        image_id = digest_of(raw)
        (content / image_id.split(":")[1]).write_bytes(raw)
        ids.append(image_id)
    return ids


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[imagestore.Store,
                                                                          list[str]]]:
    base = tmp_path_factory.mktemp("search")
    root = base / "root"
    (root / "imagedb" / "content" / "sha256").mkdir(parents=True)
    (root / "layerdb" / "sha256").mkdir(parents=True)
    docs = [json.dumps({"comment": f"search-{i}", "rootfs": {"type": "layers"}}).encode()
            for i in range(N_IMAGES)]
    ids = _write_configs(root, docs)
    store = imagestore.open(root, index=base / "index.sqlite")
    try:
        assert len(store) == N_IMAGES
        yield store, sorted(ids)
    finally:
        store.close()


@pytest.fixture
def abc_store(empty_root: Path, open_store: OpenStore) -> tuple[imagestore.Store, list[str]]:
    """The TestStoreLen store: ``{"comment": "abcN", "rootfs": {"type": "layers"}}``."""
    store = open_store(empty_root)
    ids = [store.create(f'{{"comment": "abc{i}", "rootfs": {{"type": "layers"}}}}'.encode())
           for i in range(10)]
    return store, ids


# -- derived cases and the contract (docs/moby-semantics.md §5.6, §7) ----------------------------
def test_store_len_searches(abc_store: tuple[imagestore.Store, list[str]]) -> None:
    store, ids = abc_store
    with pytest.raises(AmbiguousImageID) as info:
        store.search("e")
    assert info.value.term == "e"
    assert info.value.candidates == sorted([ids[0], ids[1], ids[5]])
    assert store.search("e9") == ids[0]
    assert store.search("e7") == ids[1]
    with pytest.raises(AmbiguousImageID) as info:
        store.search("2")
    assert info.value.candidates == sorted([ids[4], ids[8]])
    assert store.search("25") == ids[4]
    assert store.search("sha256:25") == ids[4]
    assert store.search("ad4") == ids[2]
    with pytest.raises(ImageNotFound):
        store.search("E9")
    with pytest.raises(ImageNotFound):
        store.search("sha256:E9")


def test_full_ids_and_bare_hex(abc_store: tuple[imagestore.Store, list[str]]) -> None:
    store, ids = abc_store
    for image_id in ids:
        assert store.search(image_id) == image_id
        assert store.search(image_id.split(":")[1]) == image_id
        with pytest.raises(ImageNotFound):
            store.search(image_id + "0")
        with pytest.raises(ImageNotFound):
            store.search(image_id.split(":")[1] + "0")


@pytest.mark.parametrize("term", ["", "sha256:", ":", ":e9", "md5:e9", "sha512:e9", "SHA256:e9",
                                  "e9 ", " e9", "e9\n", "\0", "e9\0", "e" * 65])
def test_not_found_terms(abc_store: tuple[imagestore.Store, list[str]], term: str) -> None:
    store, _ = abc_store
    with pytest.raises(ImageNotFound) as info:
        store.search(term)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, imagestore.ImageStoreError)


@pytest.mark.parametrize("term", ["%", "_", "e%", "e_", "e_67", "e9%", "%9", "_9", "sha256:%",
                                  "sha256:e_", "e9675_", "[e]", "e*", ".*", "e9'", "e9\\"])
def test_pattern_characters_are_never_wildcards(abc_store: tuple[imagestore.Store, list[str]],
                                                term: str) -> None:
    store, _ = abc_store
    with pytest.raises(ImageNotFound):
        store.search(term)


def test_empty_store(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    for term in ("", "e", "sha256:e", "0" * 64):
        with pytest.raises(ImageNotFound):
            store.search(term)


def test_deleted_images_are_not_found(abc_store: tuple[imagestore.Store, list[str]]) -> None:
    store, ids = abc_store
    store.delete(ids[0])
    with pytest.raises(AmbiguousImageID) as info:
        store.search("e")
    assert info.value.candidates == sorted([ids[1], ids[5]])
    with pytest.raises(ImageNotFound):
        store.search("e9")


# -- brute force over a big store ------------------------------------------------------------
def _terms(ids: list[str]) -> st.SearchStrategy[str]:
    hex_of = st.sampled_from(ids).map(lambda i: i.split(":")[1])
    prefix = st.tuples(hex_of, st.integers(0, 66)).map(lambda t: t[0][: t[1]])
    random_hex = st.text(alphabet=HEXCHARS, max_size=6)
    bare = prefix | random_hex | st.text(alphabet=HEXCHARS + "ABCDEF%_:", max_size=5)
    with_alg = st.tuples(st.sampled_from(["", "sha256:", "SHA256:", "md5:", "sha512:", ":"]),
                         bare).map(lambda t: t[0] + t[1])
    return with_alg | st.text(max_size=8)


def test_prefix_search_matches_moby_lookup(
    big_store: tuple[imagestore.Store, list[str]],
) -> None:
    store, ids = big_store

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_terms(ids))
    def check(term: str) -> None:
        assert store_lookup(store, term) == expected(ids, term)

    check()


def test_every_prefix_length_of_some_ids(big_store: tuple[imagestore.Store, list[str]]) -> None:
    store, ids = big_store
    for image_id in ids[:: max(1, len(ids) // 25)]:
        hex_ = image_id.split(":")[1]
        for n in range(1, 65):
            for term in (hex_[:n], "sha256:" + hex_[:n]):
                assert store_lookup(store, term) == expected(ids, term), term


def test_ambiguous_candidates_are_sorted_and_complete(
    big_store: tuple[imagestore.Store, list[str]],
) -> None:
    store, ids = big_store
    checked = 0
    for prefix in [*HEXCHARS, *(a + b for a in HEXCHARS for b in HEXCHARS[:4]),
                   *{i.split(":")[1][:3] for i in ids[:50]}]:
        matches = sorted(i for i in ids if i.split(":")[1].startswith(prefix))
        if len(matches) < 2:
            continue
        for term in (prefix, "sha256:" + prefix):
            with pytest.raises(AmbiguousImageID) as info:
                store.search(term)
            assert info.value.term == term
            assert info.value.candidates == matches
            checked += 1
    assert checked > 40


# -- the SQL behind a search -----------------------------------------------------------------
def _raw_connections(store: imagestore.Store) -> list[sqlite3.Connection]:
    """Plain sqlite3 connections the store may keep beside its engine for hot reads."""
    found: list[sqlite3.Connection] = []
    pending: list[object] = list(vars(store).values())
    while pending:
        value = pending.pop()
        if isinstance(value, sqlite3.Connection):
            found.append(value)
        elif isinstance(value, (list, tuple, set)):
            pending.extend(value)
        elif isinstance(value, threading.local) or type(value).__module__.startswith(
                "imagestore."):
            pending.extend(vars(value).values())
    return found


def _captured(store: imagestore.Store, term: str, *, table: str = "images",
              ask: Callable[[str], object] | None = None) -> list[tuple[str, Any]]:
    """Every statement on ``table`` that ``store.search(term)`` (or ``ask(term)``) sends to
    SQLite, with its parameters.

    Statements through the SQLAlchemy engine are caught by a ``before_cursor_execute``
    listener; statements on a plain sqlite3 connection by SQLite's trace hook (which reports
    them with the parameters already expanded).
    """
    call = ask or store.search
    with contextlib.suppress(AmbiguousImageID, ImageNotFound):
        call(term)  # let the store open whatever connections it uses
    seen: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        seen.append((statement, parameters))

    raw = _raw_connections(store)
    event.listen(store.index.engine, "before_cursor_execute", listen)
    for conn in raw:
        conn.set_trace_callback(lambda statement: seen.append((statement, ())))
    try:
        with contextlib.suppress(AmbiguousImageID, ImageNotFound):
            call(term)
    finally:
        event.remove(store.index.engine, "before_cursor_execute", listen)
        for conn in raw:
            conn.set_trace_callback(None)
    return [(s, p) for s, p in seen if f" {table}" in s and s.lstrip().upper().startswith(
        ("SELECT", "WITH"))]


def _plan(store: imagestore.Store, statement: str, parameters: Any) -> list[str]:
    with store.index.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    return [str(r[-1]) for r in rows]


@pytest.mark.parametrize("term", ["3", "3a", "sha256:3a7", "3a7f0c"])
def test_prefix_search_uses_an_index(big_store: tuple[imagestore.Store, list[str]],
                                     term: str) -> None:
    store, _ = big_store
    queries = _captured(store, term)
    assert queries, "search issued no query on images"
    for statement, parameters in queries:
        plan = _plan(store, statement, parameters)
        text = " | ".join(plan)
        assert any("SEARCH" in d and "USING" in d and ("INDEX" in d or "PRIMARY KEY" in d)
                   for d in plan), text
        assert not any(d.startswith("SCAN images") or d.startswith("SCAN TABLE images")
                       for d in plan), text
        assert "TEMP B-TREE" not in text, text


def _refs_of(store: imagestore.Store, image_id: str) -> list[str]:
    with store.index.read() as q:
        return q.refs_of(image_id)


@pytest.mark.parametrize(("table", "index", "ask"), [
    ("image_parents", "ix_image_parents_parent (store_id=? AND parent_id=?)",
     lambda store: store.children),
    ("tags", "ix_tags_image (store_id=? AND image_id=?)",
     lambda store: functools.partial(_refs_of, store)),
])
def test_lookups_by_a_column_search_its_index(
        big_store: tuple[imagestore.Store, list[str]], table: str, index: str,
        ask: Callable[[imagestore.Store], Callable[[str], object]]) -> None:
    """Children of an image, references to it: one search of the column's index, never a
    walk over the store's rows (which an ORDER BY on the primary key's column would make the
    planner choose)."""
    store, ids = big_store
    queries = _captured(store, ids[0], table=table, ask=ask(store))
    assert queries, f"no query on {table}"
    for statement, parameters in queries:
        plan = " | ".join(_plan(store, statement, parameters))
        assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
