"""What ``docker image prune`` filters by (moby daemon/images/image_prune.go): its
accepted keys, and labels matched as moby's ``filters.Args.MatchKVList`` matches them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imagestore.errors import ImageStoreError
from imagestore.moby.image import Image

FILTERS = ("dangling", "label", "label!", "until")


def prune_filters(given: Iterable[str]) -> dict[str, set[str]]:
    """``--filter KEY=VALUE`` as moby's ``filters.Args`` holds them: a set of values by key;
    moby's errors for a key it does not accept and for two ``until``."""
    out: dict[str, set[str]] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTERS:
            raise ImageStoreError(f"invalid filter {item!r} (accepted: "
                                  f"{', '.join(f + '=...' for f in FILTERS)})")
        out.setdefault(key, set()).add(value)
    if len(out.get("until", ())) > 1:
        raise ImageStoreError("more than one until filter specified")
    return out


def labels_match(filters: dict[str, set[str]], labels: dict[str, str]) -> bool:
    """moby's ``matchLabels`` over ``MatchKVList`` (``filters``: ``label`` and ``label!``
    values): every ``label`` must match, and not every ``label!``."""

    def all_match(key: str) -> bool:
        values = filters.get(key, set())
        return not values or (bool(labels) and all(
            (k in labels and (not sep or labels[k] == v))
            for k, sep, v in (x.partition("=") for x in values)))

    return all_match("label") and not ("label!" in filters and all_match("label!"))


def config_labels(image_id: str, raw: bytes) -> dict[str, str] | None:
    """``config.Labels`` as Go decodes it (keys folded; null values ""); ``None`` when the
    config itself is null: moby then applies no label filter at all."""
    config = Image(image_id, raw).config
    if config is None:
        return None
    labels: Any = None
    for key, value in config.items():
        if key.lower() == "labels":
            labels = value
    return {k: v or "" for k, v in labels.items()} if isinstance(labels, dict) else {}


__all__ = ["FILTERS", "config_labels", "labels_match", "prune_filters"]
