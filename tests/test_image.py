"""The image model: moby's image_test.go plus Go ``encoding/json`` parity.

See docs/moby-semantics.md §3.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagestore import Image, InvalidImageConfig
from imagestore.moby import image as image_module
from imagestore.moby.digest import digest_of
from imagestore.moby.gotime import _parse_time, format_time, parse_time
from imagestore.moby.image import check_history, parse_config

SAMPLE_IMAGE_JSON = (
    b'{\n\t"architecture": "amd64",\n\t"os": "linux",\n\t"config": {},\n\t"rootfs": {\n'
    b'\t\t"type": "layers",\n\t\t"diff_ids": []\n\t}\n}'
)
SAMPLE_ID = "sha256:66ad98165d38f53ee73868f82bd4eed60556ddfee824810a4062c4f777b20a5b"
ROOTFS = '"rootfs": {"type": "layers"}'
DIFF = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"


def doc(extra: str = "") -> bytes:
    """A valid config with ``extra`` members appended inside the top-level object."""
    return ("{" + ROOTFS + (", " + extra if extra else "") + "}").encode()


# -- image_test.go ---------------------------------------------------------------------------
def test_new_from_json_keeps_raw_bytes_exactly() -> None:
    assert digest_of(SAMPLE_IMAGE_JSON) == SAMPLE_ID
    image = Image.from_raw(SAMPLE_ID, SAMPLE_IMAGE_JSON)
    assert image.raw == SAMPLE_IMAGE_JSON
    assert image.id == SAMPLE_ID
    assert str(image) == SAMPLE_ID
    assert image.architecture == "amd64"
    assert image.os == "linux"
    assert image.config == {}
    assert image.rootfs.type == "layers"
    assert image.rootfs.diff_ids == []
    assert image.chain_id is None


def test_new_from_json_with_invalid_json() -> None:
    with pytest.raises(InvalidImageConfig) as info:
        parse_config(b"{}")
    assert str(info.value) == "invalid image JSON, no RootFS key"
    assert isinstance(info.value, ValueError)


def test_invalid_config_rejected_by_from_raw() -> None:
    with pytest.raises(InvalidImageConfig):
        Image.from_raw(digest_of(b"invalid"), b"invalid")


def test_image_fields() -> None:
    raw = json.dumps({
        "architecture": "arm64", "variant": "v8", "os": "linux", "author": "me",
        "comment": "hello", "docker_version": "20.10.24", "created": "2026-11-30T00:04:55.5Z",
        "os.version": "10.0", "os.features": ["win32k"], "config": {"Env": ["A=1"]},
        "container_config": {"Cmd": "sh"}, "history": [{"created_by": "x"}],
        "rootfs": {"type": "layers", "diff_ids": [DIFF]},
    }).encode()
    image = Image.from_raw(digest_of(raw), raw, "sha256:" + "1" * 64)
    assert image.parent == "sha256:" + "1" * 64
    assert (image.architecture, image.variant, image.os) == ("arm64", "v8", "linux")
    assert (image.author, image.comment, image.docker_version) == ("me", "hello", "20.10.24")
    assert image.created == datetime(2026, 11, 30, 0, 4, 55, 500000, tzinfo=timezone.utc)
    assert image.os_version == "10.0"
    assert image.os_features == ["win32k"]
    assert image.config == {"Env": ["A=1"]}
    assert image.history == [{"created_by": "x"}]
    assert image.rootfs.diff_ids == [DIFF]
    assert image.chain_id == DIFF


def test_missing_fields_have_empty_defaults() -> None:
    image = Image.from_raw(digest_of(doc()), doc())
    assert image.created is None
    assert image.author == image.comment == image.os == image.architecture == ""
    assert image.config is None
    assert image.history == []
    assert image.os_features == []
    assert image.parent is None


def test_rootfs_type_and_diff_ids_are_not_validated() -> None:
    fields = parse_config(b'{"rootfs": {}}')
    assert fields["rootfs"] == {"type": "", "diff_ids": []}
    fields = parse_config(b'{"rootfs": {"type": "whatever", "diff_ids": ["", "x", null]}}')
    assert fields["rootfs"] == {"type": "whatever", "diff_ids": ["", "x", ""]}


# -- Go decoder parity -----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["RootFS", "ROOTFS", "rootFs", "Rootfs"])
def test_keys_match_case_insensitively(key: str) -> None:
    fields = parse_config(f'{{"{key}": {{"TYPE": "layers", "Diff_IDs": ["{DIFF}"]}}}}'.encode())
    assert fields["rootfs"] == {"type": "layers", "diff_ids": [DIFF]}
    image = Image(digest_of(b"x"), f'{{"Comment": "c", "{key}": {{}}}}'.encode())
    assert image.comment == "c"


def test_keys_fold_like_go_unicode_simple_folding() -> None:
    # Go folds keys with Unicode simple folding: U+017F (long s) matches "s", U+212A (Kelvin
    # sign) matches "k"; so "rootf" + U+017F is the rootfs key for moby.
    fields = parse_config('{"rootf\u017f": {"type": "layers"}}'.encode())
    assert fields["rootfs"]["type"] == "layers"


def test_last_duplicate_wins() -> None:
    fields = parse_config(b'{"comment": "a", "rootfs": {"type": "x"}, "comment": "b"}')
    assert fields["comment"] == "b"
    fields = parse_config(b'{"rootfs": {"type": "x"}, "rootfs": {"type": "y"}}')
    assert fields["rootfs"]["type"] == "y"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"rootfs": {"type": "layers"}, "rootfs": null}',
        b'{"rootfs": {"type": "layers"}, "RootFS": null}',
        b'{"RootFS": {"type": "layers"}, "rootfs": null}',
    ],
)
def test_later_null_rootfs_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidImageConfig, match="no RootFS key"):
        parse_config(raw)


def test_later_case_variant_replaces_earlier_value() -> None:
    fields = parse_config(b'{"rootfs": null, "ROOTFS": {"type": "x"}, "comment": "a",'
                          b' "COMMENT": "b"}')
    assert fields["rootfs"]["type"] == "x"
    assert fields["comment"] == "b"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_rejected(literal: str) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(doc(f'"unknown": {literal}'))
    with pytest.raises(InvalidImageConfig):
        parse_config(doc(f'"Size": {literal}'))


@pytest.mark.parametrize(
    "extra",
    [
        '"comment": 5',
        '"comment": true',
        '"comment": ["a"]',
        '"Size": 1.5',
        '"Size": "1"',
        '"Size": 1e3',
        '"Size": true',
        '"created": 5',
        '"history": {}',
        '"history": [5]',
        '"history": [{"empty_layer": "yes"}]',
        '"history": [{"created_by": 1}]',
        '"os.features": "x"',
        '"config": []',
        '"config": {"Env": "A=1"}',
        '"config": {"Tty": "yes"}',
        '"config": {"Labels": {"a": 1}}',
        '"config": {"Healthcheck": {"Interval": 1.5}}',
        '"container_config": {"Cmd": 5}',
        '"parent": 5',
    ],
)
def test_wrong_field_types_rejected(extra: str) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(doc(extra))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"rootfs": {"type": "layers", "diff_ids": "x"}}',
        b'{"rootfs": {"type": "layers", "diff_ids": [1]}}',
        b'{"rootfs": {"type": 5}}',
        b'{"rootfs": []}',
        b'{"rootfs": "layers"}',
    ],
)
def test_wrong_rootfs_types_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(raw)


def test_size_must_fit_in_int64() -> None:
    parse_config(doc('"Size": 9223372036854775807'))
    parse_config(doc('"Size": -9223372036854775808'))
    with pytest.raises(InvalidImageConfig):
        parse_config(doc('"Size": 9223372036854775808'))
    with pytest.raises(InvalidImageConfig):
        parse_config(doc('"Size": -9223372036854775809'))


def test_nulls_and_unknown_keys_are_accepted() -> None:
    fields = parse_config(doc('"comment": null, "Size": null, "config": null, "history": null,'
                              ' "unknown": {"deep": [1, 2.5, "x"]}, "os.features": null'))
    assert fields["rootfs"]["type"] == "layers"
    assert "unknown" not in fields


@pytest.mark.parametrize("raw", [b"[]", b'[{"rootfs": {}}]', b'"string"', b"5", b"true"])
def test_non_object_documents_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(raw)


def test_null_document_rejected_for_missing_rootfs() -> None:
    with pytest.raises(InvalidImageConfig) as info:
        parse_config(b"null")
    assert str(info.value) == "invalid image JSON, no RootFS key"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"{" * 100_000,
        b'{"a":' * 100_000,
        b'{"rootfs": {"type": "layers"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_deep_nesting_is_invalid_config_not_recursion_error(raw: bytes) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(raw)


def test_invalid_utf8_inside_string_is_accepted_and_replaced() -> None:
    raw = b'{"comment": "a\xffb", ' + ROOTFS.encode() + b"}"
    image = Image.from_raw(digest_of(raw), raw)
    assert image.comment == "a\ufffdb"
    assert image.raw == raw


@pytest.mark.parametrize("tail", [b" x", b"}", b" {}", b"\x00", b", 1"])
def test_trailing_garbage_rejected(tail: bytes) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(doc() + tail)


def test_surrounding_whitespace_accepted() -> None:
    parse_config(b" \t\r\n" + doc() + b"\n \t")


@pytest.mark.parametrize("raw", [b"", b"invalid", b"{", b'{"rootfs": {}', b"\xef\xbb\xbf{}"])
def test_malformed_json_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(raw)


@pytest.mark.parametrize("created", ["yesterday", "\uff12\uff10\uff12\uff10-01-01T00:00:00Z",
                                     "2020-01-01T00:00:0\u0665Z", "2017-03-02 10:15:07Z",
                                     "2017-13-02T10:15:07Z", "2017-03-02T10:15:07",
                                     "2017-02-30T10:15:07Z"])
def test_created_must_be_rfc3339(created: str) -> None:
    with pytest.raises(InvalidImageConfig):
        parse_config(doc(f'"created": "{created}"'))


@pytest.mark.parametrize("offset", ["+25:00", "-25:00", "+99:00", "+25:30", "+24:61"])
def test_created_with_out_of_range_offset_is_invalid_config(offset: str) -> None:
    # Go's time.Parse rejects offset hours above 24 and minutes above 60; such a value must be
    # an InvalidImageConfig, never another exception (sync only skips InvalidImageConfig).
    with pytest.raises(InvalidImageConfig):
        parse_config(doc(f'"created": "2020-01-01T00:00:00{offset}"'))


@pytest.mark.parametrize("offset", ["+24:00", "-24:00", "+23:60", "+24:60"])
def test_created_with_edge_offset_never_escapes(offset: str) -> None:
    # Go accepts these; a port may accept or reject them, but only as InvalidImageConfig.
    _must_return_or_reject(doc(f'"created": "2020-01-01T00:00:00{offset}"'))


# -- history ---------------------------------------------------------------------------------
def _with_history(history: list[dict[str, Any]], diff_ids: list[str]) -> dict[str, Any]:
    return parse_config(json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}).encode())


def test_check_history_too_many_non_empty_layers() -> None:
    fields = _with_history([{"created_by": "a"}, {"created_by": "b"}], [DIFF])
    with pytest.raises(InvalidImageConfig) as info:
        check_history(fields)
    assert str(info.value) == "too many non-empty layers in History section"


def test_check_history_empty_layer_makes_it_valid() -> None:
    check_history(_with_history([{"created_by": "a"}, {"created_by": "b", "empty_layer": True}],
                                [DIFF]))
    check_history(_with_history([{"created_by": "a"}, {"created_by": "b", "Empty_Layer": True}],
                                [DIFF]))


def test_check_history_fewer_entries_and_false_empty_layer() -> None:
    check_history(_with_history([], [DIFF, DIFF]))
    check_history(_with_history([{"created_by": "a"}], [DIFF, DIFF]))
    with pytest.raises(InvalidImageConfig):
        check_history(_with_history([{"empty_layer": False}], []))
    check_history(_with_history([{"empty_layer": True}] * 5, []))


# -- times -----------------------------------------------------------------------------------
UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T00:08:20.219763093Z", datetime(2026, 11, 30, 0, 8, 20, 219763, UTC)),
        ("2026-11-30T00:08:20Z", datetime(2026, 11, 30, 0, 8, 20, tzinfo=UTC)),
        ("2026-11-30T00:08:20.5Z", datetime(2026, 11, 30, 0, 8, 20, 500000, UTC)),
        ("2017-03-02T10:15:07.123456789+01:00", datetime(2017, 3, 2, 9, 15, 7, 123456, UTC)),
        ("2017-03-02T00:15:07-05:30", datetime(2017, 3, 2, 5, 45, 7, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


def test_parse_time_keeps_the_offset() -> None:
    parsed = parse_time("2017-03-02T10:15:07+01:00")
    assert parsed.utcoffset() == timedelta(hours=1)
    assert parse_time("2017-03-02T10:15:07Z").utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2026, 11, 30, 0, 8, 20, 219763, UTC), "2026-11-30T00:08:20.219763Z"),
        (datetime(2026, 11, 30, 0, 8, 20, 219000, UTC), "2026-11-30T00:08:20.219Z"),
        (datetime(2026, 11, 30, 0, 8, 20, 0, UTC), "2026-11-30T00:08:20Z"),
        (datetime(2026, 11, 30, 0, 8, 20, 100000, UTC), "2026-11-30T00:08:20.1Z"),
        (datetime(2017, 3, 2, 10, 15, 7, 123000, timezone(timedelta(hours=1))),
         "2017-03-02T09:15:07.123Z"),
        (datetime(2017, 3, 1, 23, 0, 0, tzinfo=timezone(timedelta(hours=-2))),
         "2017-03-02T01:00:00Z"),
    ],
)
def test_format_time(when: datetime, text: str) -> None:
    assert format_time(when) == text


def test_format_time_pads_the_year_like_go() -> None:
    assert format_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert format_time(datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)) == "0999-12-31T23:59:59Z"


def test_format_time_refuses_naive() -> None:
    with pytest.raises(ValueError):
        format_time(datetime(2020, 1, 1))


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_format_parse_round_trip(when: datetime) -> None:
    text = format_time(when)
    assert text.endswith("Z")
    if "." in text:
        assert not text[:-1].endswith("0")
    back = parse_time(text)
    assert back == when
    assert back.utcoffset() == timedelta(0)


# -- fuzzing ---------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["rootfs", "RootFS", "type", "diff_ids", "history",
                                       "created", "empty_layer", "config", "Size", "comment",
                                       "Env", "Labels", "Healthcheck", "Interval", "x"]),
                      inner, max_size=5),
    max_leaves=20,
)


def _must_return_or_reject(raw: bytes) -> None:
    try:
        fields = parse_config(raw)
    except InvalidImageConfig:
        return
    assert isinstance(fields["rootfs"]["type"], str)
    assert all(isinstance(d, str) for d in fields["rootfs"]["diff_ids"])
    try:
        check_history(fields)
    except InvalidImageConfig:
        return
    image = Image(digest_of(raw), raw)
    _ = (image.created, image.comment, image.config, image.history, image.rootfs, image.chain_id)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_parse_config_with_bytes(raw: bytes) -> None:
    _must_return_or_reject(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_fuzz_parse_config_with_json_documents(value: Any) -> None:
    _must_return_or_reject(json.dumps(value).encode())


@settings(max_examples=200)
@given(st.text(alphabet="0123456789-:TZz.+ ", max_size=40)
       | st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                     r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})\Z"))
def test_fuzz_created_strings(created: str) -> None:
    _must_return_or_reject(doc(f'"created": {json.dumps(created)}'))


def _outcome(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except InvalidImageConfig:
        return "invalid"


_TIME_CHARS = "0123456789-:.TtZz+ ٣x"


@settings(max_examples=400)
@given(st.one_of(
    st.text(alphabet=_TIME_CHARS, min_size=18, max_size=32),
    st.builds(lambda d, f, z: d + f + z,
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
              .map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S")),
              st.text(alphabet="0123456789.٣", max_size=12).map(lambda f: "." + f if f else f),
              st.sampled_from(["Z", "z", "+00:00", "Z1Z", ""])),
))
def test_the_fast_path_of_parse_time_answers_as_the_full_parser(text: str) -> None:
    """Docker's own form skips the regex; it must accept and read exactly what it accepts."""
    assert _outcome(parse_time, text) == _outcome(_parse_time, text)


# Documents a plain decode may get wrong if unguarded: duplicated keys, several spellings of
# one field (nested too), huge numbers, NaN, lone surrogates; mostly valid, so that both
# decodes get as far as comparing fields.
def _obj(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"


def _pairs_of(*choices: tuple[list[str], list[str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    one = st.one_of(*(st.tuples(st.sampled_from(keys), st.sampled_from(values))
                      for keys, values in choices))
    return st.lists(one, max_size=6)


_HUGE = ["18446744073709551617", "123456789012345678901234", "1e400", "NaN", '"\\ud800"']
_HISTORY = _pairs_of((["created_by", "Created_By", "CREATED_BY"], ['"x"', '"y"', "null", "1"]),
                     (["empty_layer", "Empty_Layer"], ["true", "false", "null"]))
_CONFIG = _pairs_of(
    (["Env", "env", "ENV"], ['["A=1"]', '["B=2"]', "null", '"A"']),
    (["Cmd", "cmd"], ['"sh"', '["sh", "-c"]', "null"]),
    (["ExposedPorts"], ['{"80/tcp": {}}', *(f'{{"80/tcp": {{"x": {h}}}}}' for h in _HUGE)]),
    (["Labels"], ['{"a": "b", "a": "c"}', '{"a": 1}']))
_ROOTFS = f'{{"type": "layers", "diff_ids": ["{DIFF}"]}}'
_TOP = st.tuples(
    _pairs_of((["comment", "Comment", "COMMENT"], ['"a"', '"b"', "null", "1"]),
              (["os", "OS", "o\u0053"], ['"linux"', '"windows"']),
              (["rootfs", "RootFS", "rootf\u017f"], [_ROOTFS, "null", '{"type": "x"}']),
              (["unknown"], _HUGE)),
    st.lists(_HISTORY.map(_obj), max_size=3).map(lambda h: "[" + ", ".join(h) + "]"),
    _CONFIG.map(_obj),
    st.permutations(range(3)),
).map(lambda t: _obj([("rootfs", _ROOTFS), *t[0],
                      *[[("history", t[1]), ("config", t[2]), ("Config", t[2])][i]
                        for i in t[3][:2]]]))


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(_TOP)
def test_the_plain_decode_answers_as_the_order_keeping_one(text: str) -> None:
    """parse_config tries a plain decode first; whatever it returns or raises must be exactly
    what the order-keeping decode (the Go-parity reference) gives, error message included."""
    def outcome(parse: Any) -> Any:
        try:
            return parse()
        except InvalidImageConfig as exc:
            return ("invalid", str(exc))

    assert outcome(lambda: parse_config(text.encode())) == \
        outcome(lambda: image_module._parse_ordered(text))
