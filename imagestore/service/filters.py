"""What ``docker image prune`` filters by (moby daemon/images/image_prune.go): its
accepted keys, and labels matched as moby's ``filters.Args.MatchKVList`` matches them."""

from __future__ import annotations

from collections.abc import Iterable

from imagestore.errors import ImageStoreError
from imagestore.service.inspect import go_image

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


def config_labels(raw: bytes) -> dict[str, str] | None:
    """``config.Labels`` as Go decodes the config (keys folded, a repeated ``config`` key
    merged into one, null values ""); ``None`` when the config itself is null: moby then
    applies no label filter at all."""
    config = go_image(raw)["config"]
    return None if config is None else dict(config["Labels"] or {})


__all__ = ["FILTERS", "config_labels", "labels_match", "prune_filters"]
