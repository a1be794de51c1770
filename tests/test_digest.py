"""Digests, chain IDs and search terms (docs/moby-semantics.md §1 and §4)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore.moby.digest import (
    SearchTerm,
    chain_id,
    chain_ids,
    digest_of,
    hex_of,
    is_hex64,
    is_image_id,
    normalize_id,
    parse_search_term,
    prefix_upper_bound,
)

EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
C6F988 = "sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1"
FOO_HEX = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def reference_chain(diff_ids: list[str]) -> str | None:
    """The formula of docs/moby-semantics.md §1.2, written independently of the package."""
    current: str | None = None
    for diff in diff_ids:
        if current is None:
            current = diff
        else:
            current = "sha256:" + hashlib.sha256((current + " " + diff).encode()).hexdigest()
    return current


# -- chain IDs -------------------------------------------------------------------------------
def test_chain_id_migratev1_vector() -> None:
    assert chain_id([C6F988, EMPTY_TAR]) == (
        "sha256:c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f"
    )


def test_chain_id_identity_vectors() -> None:
    assert chain_id(["sha256:a", "sha256:b"]) == (
        "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8"
    )
    assert chain_id(["sha256:a", "sha256:b", "sha256:c"]) == (
        "sha256:dee159b33409cefa3f6eda71539f006014283e9d9130c18a1dea7bd8a33c9b1b"
    )


def test_chain_id_single_element_is_returned_unchanged_and_unvalidated() -> None:
    assert chain_id([EMPTY_TAR]) == EMPTY_TAR
    # moby's store tests use a diff id without "sha256:"; it is the chain id verbatim.
    assert chain_id([FOO_HEX]) == FOO_HEX
    assert chain_id(["not a digest"]) == "not a digest"


def test_chain_id_of_no_layers_is_none() -> None:
    assert chain_id([]) is None
    assert chain_ids([]) == []


def test_chain_ids_lists_every_prefix_bottom_first() -> None:
    diffs = ["sha256:a", "sha256:b", "sha256:c"]
    assert chain_ids(diffs) == [
        "sha256:a",
        "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8",
        "sha256:dee159b33409cefa3f6eda71539f006014283e9d9130c18a1dea7bd8a33c9b1b",
    ]


@given(st.lists(HEX64.map(lambda h: "sha256:" + h), max_size=8))
def test_chain_id_matches_reference_formula(diffs: list[str]) -> None:
    assert chain_id(diffs) == reference_chain(diffs)
    ids = chain_ids(diffs)
    assert ids == [reference_chain(diffs[: i + 1]) for i in range(len(diffs))]
    assert (ids[-1] if ids else None) == chain_id(diffs)


def test_same_diff_on_other_parent_gives_other_chain() -> None:
    a, b, c = (digest_of(x) for x in (b"a", b"b", b"c"))
    assert chain_id([a, c]) != chain_id([b, c])
    assert chain_id([a, b]) != chain_id([b, a])


# -- digests and IDs -------------------------------------------------------------------------
def test_digest_of_known_values() -> None:
    assert digest_of(b"foo") == "sha256:" + FOO_HEX
    assert digest_of(b"foobar") == (
        "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
    )
    assert digest_of(b"\0" * 1024) == EMPTY_TAR


def test_is_hex64_and_is_image_id() -> None:
    assert is_hex64(FOO_HEX)
    assert not is_hex64(FOO_HEX.upper())
    assert not is_hex64(FOO_HEX[:-1])
    assert not is_hex64(FOO_HEX + "0")
    assert not is_hex64(FOO_HEX[:-1] + "\n")
    assert not is_hex64("g" * 64)
    assert is_image_id("sha256:" + FOO_HEX)
    assert not is_image_id(FOO_HEX)
    assert not is_image_id("sha512:" + FOO_HEX)
    assert not is_image_id("SHA256:" + FOO_HEX)


def test_hex_of() -> None:
    assert hex_of("sha256:" + FOO_HEX) == FOO_HEX
    for bad in (FOO_HEX, "sha256:abc", "sha256:../../etc/passwd", "", "sha256:" + "A" * 64):
        with pytest.raises(ValueError):
            hex_of(bad)


def test_normalize_id() -> None:
    full = "sha256:" + FOO_HEX
    assert normalize_id(full) == full
    assert normalize_id(FOO_HEX) == full
    for bad in ("", "sha256:", FOO_HEX[:12], FOO_HEX.upper(), "sha256:" + FOO_HEX.upper(),
                "sha512:" + FOO_HEX, FOO_HEX + "0", "sha256:" + FOO_HEX + "0", " " + FOO_HEX,
                full + "\n", "sha256:sha256:" + FOO_HEX, "../" + FOO_HEX):
        assert normalize_id(bad) is None, bad


@given(HEX64)
def test_normalize_id_property(hex64: str) -> None:
    assert normalize_id(hex64) == "sha256:" + hex64
    assert normalize_id("sha256:" + hex64) == "sha256:" + hex64
    assert normalize_id(hex64[:63]) is None


# -- search terms ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("f40b4d", SearchTerm("f40b4d", True)),
        ("e", SearchTerm("e", True)),
        ("sha256:f40", SearchTerm("f40", True)),
        ("sha256:" + FOO_HEX, SearchTerm(FOO_HEX, True)),
        (FOO_HEX, SearchTerm(FOO_HEX, True)),
    ],
)
def test_parse_search_term_possible(term: str, expected: SearchTerm) -> None:
    assert parse_search_term(term) == expected


@pytest.mark.parametrize(
    "term",
    [
        "sha256:",  # nothing after the colon: taken verbatim, and ':' is not hex
        ":abc",  # leading colon: verbatim
        "md5:abc",  # another algorithm never matches a sha256 store
        "sha512:abc",
        "SHA256:abc",
        "ABC",
        "sha256:ABC",
        "aBc",
        "%",
        "_",
        "e%",
        "sha256:e_",
        "..",
        "../etc",
        "/",
        "a/b",
        "\0",
        "ab\0",
        "sha256:ab\0",
        " ab",
        "ab ",
        "ab\n",
        "a" * 65,
        "sha256:" + "a" * 65,
        "a" * 10_000,
        "sha256:" + "b" * 10_000,
        "x" * 10_000,
        "sha256:sha256:ab",
        "\u0661",  # a Unicode digit is not a hex digit
    ],
)
def test_parse_search_term_impossible(term: str) -> None:
    parsed = parse_search_term(term)
    assert parsed.possible is False
    assert parsed.hex_prefix == ""


def test_parse_search_term_empty_is_empty_prefix() -> None:
    # The digest set treats "" as a prefix of everything; the store decides what it means.
    assert parse_search_term("") == SearchTerm("", True)


@given(st.text(max_size=80))
def test_parse_search_term_only_lets_lowercase_hex_through(term: str) -> None:
    parsed = parse_search_term(term)
    if parsed.possible:
        assert set(parsed.hex_prefix) <= set("0123456789abcdef")
        assert len(parsed.hex_prefix) <= 64
        assert term in (parsed.hex_prefix, "sha256:" + parsed.hex_prefix)
    else:
        assert parsed.hex_prefix == ""


@given(st.text(alphabet="0123456789abcdef", max_size=64), HEX64)
def test_prefix_upper_bound_brackets_exactly_the_prefix(prefix: str, hex64: str) -> None:
    image_id = "sha256:" + hex64
    inside = "sha256:" + prefix <= image_id < prefix_upper_bound(prefix)
    assert inside == hex64.startswith(prefix)
