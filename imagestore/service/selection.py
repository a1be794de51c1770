"""``GET /images/json`` of Docker Engine 20.10: which images it lists, in its order, for
``all`` and ``filters`` (moby daemon/images/images.go ``Images``), as IDs.

Filters come as the Docker SDK for Python takes them and the engine holds them: a value is
a string, a bool or a list (docker-py's ``utils.convert_filters``), and each key keeps a set
of strings (``filters.Args``). The engine accepts ``dangling``, ``label``, ``before``,
``since`` and ``reference`` here (``acceptedImageFilterTags``; 20.10 has no ``until`` on
this endpoint), and every refusal is an ``ImageStoreError`` worded as the engine's."""

from __future__ import annotations

from typing import Any

from imagestore.errors import AmbiguousImageID, ImageNotFound, ImageStoreError
from imagestore.moby.digest import is_hex64
from imagestore.moby.gotime import ZERO_UNIX, unix_ns
from imagestore.moby.references import (
    InvalidReference,
    normalize_reference,
    parse_normalized_named,
    split_reference,
)
from imagestore.reading import Reading
from imagestore.service.filters import config_labels, labels_match

ACCEPTED = ("dangling", "label", "before", "since", "reference")
_NS = 1_000_000_000
BAD_PATTERN = "syntax error in pattern"  # Go's path.ErrBadPattern


def api_filters(filters: dict[str, Any] | None) -> dict[str, set[str]]:
    """docker-py's ``convert_filters`` (a bool is ``"true"``/``"false"``, a value that is not
    a list is a list of one, an item that is not a string is ``str(item)``), then the
    engine's ``filters.Args`` (a set of values per key)."""
    out: dict[str, set[str]] = {}
    for key, value in (filters or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        items = value if isinstance(value, list) else [value]
        out[key] = {item if isinstance(item, str) else str(item) for item in items}
    return out


def select_images(store: Reading, *, all: bool = False,  # docker-py's name for it
                  filters: dict[str, Any] | None = None) -> list[str]:
    """The IDs ``GET /images/json?all=&filters=`` lists, newest ``Created`` second first.

    As moby's ``Images``: an image with a reference is listed, one without only when it is
    a head (or with ``all``). ``dangling=true`` lists heads without a tag (a head that only
    has digests counts as dangling), ``dangling=false`` images with a reference; ``label``
    (``k`` or ``k=v``, all must match) skips an image whose config is null; ``before`` and
    ``since`` compare creation instants, exclusive; ``reference`` keeps the references that
    match one of its patterns (``reference.FamiliarMatch``: Go's ``path.Match`` on the
    familiar name with its tag or digest, then on the name alone), and an image none of
    whose references match is left out.

    The engine's order within one second is a map's (random): here the newest instant comes
    first, then the smaller ID. Where the engine's answer is itself random (several
    ``before`` or ``since`` values, several unknown keys, a malformed pattern beside one
    that matches first), the answer here is one it can give: the last value in sorted
    order, the first unknown key, the pattern error. Images of another OS, which the engine
    never loads, are listed (as imagestore restores them)."""
    args = api_filters(filters)
    for key in args:
        if key not in ACCEPTED:
            raise ImageStoreError(f"Invalid filter '{key}'")
    dangling_only = False
    if "dangling" in args:
        values = args["dangling"]
        # filters.Args.ExactMatch: a key without values matches anything
        if not values or "true" in values:
            dangling_only = True
        elif "false" not in values:
            raise ImageStoreError(f"Invalid filter 'dangling=[{' '.join(sorted(values))}]'")
    before = _bound(store, args.get("before", set()))
    since = _bound(store, args.get("since", set()))
    patterns = sorted(args.get("reference", set()))
    by_ref = "reference" in args
    bad_pattern = any(_malformed(p) for p in patterns)
    with store.index.read() as q:
        rows, tag_rows = q.listed_images(all_images=all and not dangling_only, dangling=False)
        ref_rows = q.graph()[2] if by_ref else []
        configs = q.images(heads_only=dangling_only) if "label" in args else {}
    # Each image's references as (familiar string, familiar name, tagged).
    refs: dict[str, list[tuple[str, str, bool]]] = {}
    if by_ref:
        for image_id, ref in ref_rows:
            name, tag, _ = split_reference(ref)
            refs.setdefault(image_id, []).append((ref, name, tag is not None))
    else:
        for image_id, repository, tag in tag_rows:
            refs.setdefault(image_id, []).append(("", repository, tag is not None))
    listed: list[tuple[int, str]] = []
    for image_id, created, _, _, head in rows:
        if dangling_only and not head:
            continue  # the engine starts from Heads()
        when = _instant(created)
        if (before is not None and when >= before) or (since is not None and when <= since):
            continue
        if "label" in args:
            labels = config_labels(configs[image_id][0])  # a null config never matches
            if labels is None or not labels_match({"label": args["label"]}, labels):
                continue
        mine = refs.get(image_id, [])
        if by_ref:
            if mine and bad_pattern:
                raise ImageStoreError(BAD_PATTERN)
            mine = [r for r in mine if any(_familiar_match(p, r[0], r[1]) for p in patterns)]
        if not mine:
            # No (matching) reference: a head or, with all, any image is listed as <none>,
            # unless dangling=false or a reference filter asks for references.
            if not (all or head) or ("dangling" in args and not dangling_only) or by_ref:
                continue
        elif dangling_only and any(tagged for _, _, tagged in mine):
            continue  # a tag is not dangling (a digest alone is, for the engine)
        listed.append((when, image_id))
    # Newest second first (the engine's byCreated on Unix seconds); within one second, newest
    # instant first, then by ID (stable sorts: the ID order survives equal instants).
    listed.sort(key=lambda item: item[1])
    listed.sort(key=lambda item: item[0], reverse=True)
    return [image_id for _, image_id in listed]


def _bound(store: Reading, values: set[str]) -> int | None:
    """The creation instant (Unix ns) of the image a ``before``/``since`` value names, as
    moby's ``GetImage`` finds it; ``None`` without one."""
    found = None
    for value in sorted(values):
        image = store.get(_get_image(store, value))
        found = _instant(image.created_text)
    return found


def _instant(created: str | None) -> int:
    """A creation time as Unix nanoseconds (Go compares ``time.Time`` to the nanosecond);
    none is Go's zero time."""
    when = unix_ns(created) if created else None
    return ZERO_UNIX * _NS if when is None else when


def _get_image(store: Reading, value: str) -> str:
    """moby's ``GetImage``: ``reference.ParseAnyReference`` refuses what is neither an ID
    nor a name (with its own message); then a full ID, a reference, an ID prefix. A prefix
    of several images is not found, as moby's ``Search`` error is."""
    if not is_hex64(value):
        try:
            parse_normalized_named(value)
        except InvalidReference as exc:
            raise ImageStoreError(_distribution_2_8(str(exc))) from None
    try:
        return store.resolve(value)
    except AmbiguousImageID:
        raise ImageNotFound(f"No such image: {normalize_reference(value)}") from None


def _distribution_2_8(message: str) -> str:
    """A reference error as docker/distribution 2.8 (which moby 20.10 vendors) words it:
    its lowercase error does not name the repository yet."""
    lowercase = "invalid reference format: repository name ("
    if message.startswith(lowercase) and message.endswith(") must be lowercase"):
        return "invalid reference format: repository name must be lowercase"
    return message


def _familiar_match(pattern: str, familiar: str, name: str) -> bool:
    """distribution/reference ``FamiliarMatch``: the whole familiar string, else the name.
    ``familiar`` is "" when only the name is known (no reference filter asks then)."""
    return path_match(pattern, familiar) or path_match(pattern, name)


# -- Go's path.Match --------------------------------------------------------------------------
# Ported from Go 1.19's src/path/match.go (the Go Debian builds docker.io 20.10.24 with): it
# works on UTF-8 bytes, decodes runes for '?' and classes, and checks the whole pattern's
# syntax even when the name already failed to match.
class _BadPattern(ValueError):
    pass


_SLASH, _STAR, _BACKSLASH, _OPEN, _CLOSE = b"/*\\[]"


def _malformed(pattern: str) -> bool:
    """Whether ``path.Match`` refuses the pattern (whatever the name: it checks it all)."""
    try:
        path_match(pattern, "")
    except _BadPattern:
        return True
    return False


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` any run of non-``/`` bytes, ``?`` one non-``/``
    character, ``[...]`` a class (``^`` negates, ``lo-hi`` ranges), ``\\`` escapes.
    Raises ``ValueError`` (``syntax error in pattern``) for a malformed pattern."""
    p, s = pattern.encode("utf-8", "surrogateescape"), name.encode("utf-8", "surrogateescape")
    while p:
        star, chunk, p = _scan_chunk(p)
        if star and not chunk:
            return _SLASH not in s  # a trailing * takes the rest unless it holds a /
        t, ok = _match_chunk(chunk, s)
        if ok and (not t or p):
            s = t
            continue
        if star:
            i, advanced = 0, False
            while i < len(s) and s[i] != _SLASH:  # skip i+1 bytes, never a /
                t, ok = _match_chunk(chunk, s[i + 1:])
                if ok and not (not p and t):  # the last chunk must end the name
                    s, advanced = t, True
                    break
                i += 1
            if advanced:
                continue
        while p:  # no match; still the rest of the pattern must be well formed
            _, chunk, p = _scan_chunk(p)
            _match_chunk(chunk, b"")
        return False
    return not s


def _scan_chunk(p: bytes) -> tuple[bool, bytes, bytes]:
    star = False
    while p[:1] == b"*":
        p, star = p[1:], True
    in_range, i = False, 0
    while i < len(p):
        c = p[i]
        if c == _BACKSLASH:
            if i + 1 < len(p):
                i += 1
        elif c == _OPEN:
            in_range = True
        elif c == _CLOSE:
            in_range = False
        elif c == _STAR and not in_range:
            return star, p[:i], p[i:]
        i += 1
    return star, p, b""


def _match_chunk(chunk: bytes, s: bytes) -> tuple[bytes, bool]:
    failed = False
    while chunk:
        failed = failed or not s
        c = chunk[0]
        if c == _OPEN:
            r = 0
            if not failed:
                r, n = _decode_rune(s)
                s = s[n:]
            chunk = chunk[1:]
            negated = chunk[:1] == b"^"
            if negated:
                chunk = chunk[1:]
            match, ranges = False, 0
            while True:
                if chunk[:1] == b"]" and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == ord("-"):
                    hi, chunk = _get_esc(chunk[1:])
                match = match or lo <= r <= hi
                ranges += 1
            failed = failed or match == negated
        elif c == ord("?"):
            if not failed:
                failed = s[0] == _SLASH
                s = s[_decode_rune(s)[1]:]
            chunk = chunk[1:]
        else:
            if c == _BACKSLASH:
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern(BAD_PATTERN)
            if not failed:
                failed = chunk[0] != s[0]
                s = s[1:]
            chunk = chunk[1:]
    return (b"", False) if failed else (s, True)


def _get_esc(chunk: bytes) -> tuple[int, bytes]:
    """A class's possibly escaped character, and the rest of the chunk (never empty)."""
    if not chunk or chunk[0] in b"-]":
        raise _BadPattern(BAD_PATTERN)
    if chunk[0] == _BACKSLASH:
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern(BAD_PATTERN)
    r, n = _decode_rune(chunk)
    chunk = chunk[n:]
    if (r == 0xFFFD and n == 1) or not chunk:
        raise _BadPattern(BAD_PATTERN)
    return r, chunk


def _decode_rune(b: bytes) -> tuple[int, int]:
    """``utf8.DecodeRune``: the first rune and its width; (U+FFFD, 1) for a bad byte."""
    lead = b[0]
    width = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else \
        3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    try:
        return ord(b[:width].decode("utf-8")), width
    except (UnicodeDecodeError, TypeError):
        return 0xFFFD, 1


__all__ = ["ACCEPTED", "api_filters", "path_match", "select_images"]
