"""``GET /images/json`` filters as Docker 29's containerd image service applies them, one
image record at a time: moby daemon/containerd/image_list.go ``setupFilters`` and
``setupLabelFilter`` (``dangling``, ``label``/``label!``, ``reference``, ``before``,
``since``, ``until``), daemon/internal/filters (``Validate``, ``GetBoolOrDefault`` and their
``invalid filter`` errors), daemon/internal/timestamp ``Parse`` and containerd's
``labels.Validate``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.images import Image, is_dangling
from imagestore.containerd.meta import ImageRecord
from imagestore.errors import ImageStoreError
from imagestore.moby.gotime import go_duration, go_timestamp, unix_ns
from imagestore.service.docker29_model import (
    REFERENCE_TYPE,
    Matcher,
    best_present,
    go_config,
    walk,
)
from imagestore.service.docker29_refs import (
    InvalidParameter,
    Lookup,
    NoSuchImage,
    familiar_name,
    full_name,
    parse_normalized,
    tag_name_only,
)
from imagestore.service.selection import path_match

ACCEPTED = ("before", "dangling", "label", "label!", "reference", "since", "until")
_LABEL_MAX = 4096  # containerd pkg/labels: key and value together
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
Predicate = Callable[[ImageRecord, Image], bool]


def _invalid(key: str, values: list[str] | None = None) -> InvalidParameter:
    """filters ``invalidFilter``: ``invalid filter 'key'`` or ``'key=[v1 v2]'``."""
    shown = key if values is None else f"{key}=[{' '.join(values)}]"
    return InvalidParameter(f"invalid filter '{shown}'")


def normalize(filters: Mapping[str, Any] | str | None) -> dict[str, set[str]]:
    """Filters as ``filters.Args`` holds them (a set of values per key): from the query's
    JSON text (``filters.FromJSON``: ``{"dangling": {"true": true}}`` or the older
    ``{"dangling": ["true"]}``), or a mapping in either form or docker-py's (a bool, a
    string or a list per key)."""
    if isinstance(filters, str):
        if not filters:
            return {}
        try:
            filters = json.loads(filters)
        except ValueError:
            raise InvalidParameter("invalid filter") from None
        if not isinstance(filters, dict):
            raise InvalidParameter("invalid filter")
    out: dict[str, set[str]] = {}
    for key, value in (filters or {}).items():
        if isinstance(value, Mapping):
            items = list(value)  # Args.Get: every key, whatever its bool
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        else:
            items = [value]
        out[str(key)] = {("true" if i else "false") if isinstance(i, bool) else str(i)
                         for i in items}
    return out


def _created(image: Image, record: ImageRecord, matcher: Matcher, *,
             strict: bool = False) -> int | None:
    """image.go ``GetImage``'s ``Created`` (Unix ns) for a record: its best present
    manifest's config; ``None`` where ``GetImage`` fails (``strict``: raise its error) or
    the config has no time."""
    best = best_present(image, record.target, matcher)
    if best is None:
        if strict:
            raise NoSuchImage(f"image with reference {familiar_name(record)} was found but "
                              f"does not provide any platform")
        return None
    if best.config_raw is None:
        return None
    return unix_ns(go_config(best.config_raw)["created"] or None)


def _until(value: str, now: datetime) -> int:
    """timestamp ``Parse`` as Unix nanoseconds; the engine's error when it fails."""
    if not value.strip():
        raise InvalidParameter("invalid value for 'until' filter: failed to parse value as "
                               "time or duration: value is empty")
    duration = go_duration(value) if value != "0" else None
    if duration is not None:  # reference.Add(-d): nanoseconds kept
        return (now - _EPOCH) // timedelta(microseconds=1) * 1000 - duration
    try:
        return go_timestamp(value, now)
    except ImageStoreError as exc:
        raise InvalidParameter(f"invalid value for 'until' filter: {exc}") from None


def _label_checks(args: dict[str, set[str]]) -> list[tuple[str, str, bool, bool]]:
    """``setupLabelFilter``'s checks: (key, value, only-exists, negate)."""
    checks = []
    for name in ("label", "label!"):
        for item in sorted(args.get(name, ())):
            key, sep, value = item.partition("=")
            if len(key) + len(value) > _LABEL_MAX:
                raise InvalidParameter(
                    f"label key and value length ({len(key) + len(value)} bytes) greater "
                    f"than maximum size ({_LABEL_MAX} bytes), key: {key[:64]}: "
                    f"invalid argument")
            negate = name == "label!"
            if key.endswith("!"):
                key, negate = key[:-1], not negate
            checks.append((key, value, not sep, negate))
    return checks


def _config_matches(labels: dict[str, str] | None,
                    checks: list[tuple[str, str, bool, bool]]) -> bool:
    labels = labels or {}
    for key, value, only_exists, negate in checks:
        exists = key in labels
        if only_exists:
            if exists == negate:
                return False
            continue
        if not exists:
            if negate:
                continue
            return False
        if (labels[key] == value) == negate:
            return False
    return True


def _labels_ok(image: Image, record: ImageRecord,
               checks: list[tuple[str, str, bool, bool]]) -> bool:
    """Whether any config present under the record's target matches every check, attestation
    manifests skipped (``c8dimages.Dispatch`` over ``presentChildrenHandler``)."""
    for desc, m in walk(image, record.target):
        if m is None or not m.available or REFERENCE_TYPE in (desc.get("annotations") or {}):
            continue
        if m.config is None or m.config.media_type not in c.CONFIGS or not m.config_present:
            continue  # IsConfigType: only image configs are read
        if m.config_raw is not None \
                and _config_matches(go_config(m.config_raw)["config"]["Labels"], checks):
            return True
    return False


def _reference_ok(record: ImageRecord, patterns: list[str]) -> bool:
    ref = parse_normalized(record.name)
    if ref is None:
        return False
    targets = [ref.familiar_string(), ref.familiar_name(), str(tag_name_only(ref)),
               full_name(ref)]
    for pattern in patterns:
        for target in targets:
            try:
                if path_match(pattern, target):
                    return True
            except ValueError:  # a malformed pattern: the image does not match
                return False
    return False


@dataclass(frozen=True)
class RecordFilter:
    """The predicate over image records that ``setupFilters`` builds."""

    predicates: tuple[Predicate, ...]

    def __call__(self, record: ImageRecord, image: Image) -> bool:
        return all(p(record, image) for p in self.predicates)


def setup(args: dict[str, set[str]], images: list[Image], matcher: Matcher,
          now: datetime | None = None) -> RecordFilter:
    """``Validate`` then ``setupFilters``, raising the engine's errors."""
    for key in sorted(args):
        if key not in ACCEPTED:
            raise _invalid(key)
    preds: list[Predicate] = []
    lookup = Lookup(images)
    created: dict[str, int | None] = {}

    def candidate(record: ImageRecord) -> int | None:
        """``GetImage(candidate.Name)``: the image the record's name resolves to."""
        if record.name not in created:
            try:
                found, named = lookup.resolve(record.name)
            except (LookupError, ValueError):
                created[record.name] = None
            else:
                created[record.name] = _created(found, named, matcher)
        return created[record.name]

    for key, later in (("before", False), ("since", True)):
        for value in sorted(args.get(key, ())):
            image, record = lookup.resolve(value)
            when = _created(image, record, matcher, strict=True)
            if when is None:
                continue

            def compare(r: ImageRecord, i: Image, when: int = when, later: bool = later
                        ) -> bool:
                cand = candidate(r)
                return cand is not None and (cand > when if later else cand < when)

            preds.append(compare)
    moment = now or datetime.now(timezone.utc)
    for value in sorted(args.get("until", ())):

        def before_until(r: ImageRecord, i: Image, until: int = _until(value, moment)) -> bool:
            # a record without a creation time holds Go's zero time: before any moment
            return r.created is None or (unix_ns(r.created) or 0) < until

        preds.append(before_until)
    checks = _label_checks(args)
    if checks:
        preds.append(lambda r, i: _labels_ok(i, r, checks))
    if "dangling" in args:
        values = args["dangling"]
        is_false, is_true = bool(values & {"0", "false"}), bool(values & {"1", "true"})
        if not values or is_false == is_true:
            raise _invalid("dangling", sorted(values) if values else None)
        preds.append(lambda r, i: is_dangling(r) == is_true)
    patterns = sorted(args.get("reference", ()))
    if patterns:
        preds.append(lambda r, i: _reference_ok(r, patterns))
    return RecordFilter(tuple(preds))


__all__ = ["ACCEPTED", "RecordFilter", "normalize", "setup"]
