"""``docker image prune`` (moby daemon/images/image_prune.go ``ImagesPrune`` of Docker
20.10) on a store whose daemon is not running, and what imagestore adds to it: a dry run
that plans exactly what a run does, and ``unused_for``, an LRU cleaner's clock."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from imagestore.errors import ImageConflict, ImageStoreError
from imagestore.index import listing
from imagestore.moby.containers import Container
from imagestore.moby.gotime import go_duration, go_timestamp, parse_time, unix_ns
from imagestore.moby.root import CONTENT, Root
from imagestore.service.delete import Deleter, Record, summary
from imagestore.service.filters import config_labels, labels_match, prune_filters

if TYPE_CHECKING:
    from imagestore.store import Store

DAY_NS = 24 * 3600 * 10**9


def unused_for_ns(text: str) -> int:
    """``unused_for`` as nanoseconds: Go's durations, and days (``30d``)."""
    keep = go_duration(text, {"d": DAY_NS})
    if keep is None or keep < 0:
        raise ImageStoreError(f"unused_for: not a duration: {text!r}")
    return keep


@dataclass
class PruneResult:
    """What a prune did (or, in a dry run, would do): the engine's records in order, the
    space reclaimed as the engine counts it, and the plan: every image of the store with
    what happened to it and why."""

    deleter: Deleter
    plan: list[dict[str, Any]]
    dry_run: bool
    interrupted: bool = False

    @property
    def records(self) -> list[Record]:
        """The engine's answer: the records of every ImageDelete that returned; of an
        interrupted run, everything it did (the last ImageDelete never returned)."""
        return self.deleter.done if self.interrupted else self.deleter.reported

    @property
    def failures(self) -> list[str]:
        """Layers that could not be removed after their image went (moby logs them)."""
        return self.deleter.failures

    @property
    def space_reclaimed(self) -> int:
        return sum(self.deleter.sizes.get(value, 0) for kind, value in self.records
                   if kind == "deleted")  # layers only: images have no size entry

    def to_dict(self) -> dict[str, Any]:
        data = {**summary(self.deleter, self.records), "space_reclaimed": self.space_reclaimed,
                "plan": self.plan}
        if self.dry_run:
            data["dry_run"] = True
        if self.interrupted:
            data["interrupted"] = True
        return data


def prune(store: Store, *, filters: dict[str, set[str]] | Iterable[str] = (),
          all_images: bool = False, unused_for: str | None = None, dry_run: bool = False,
          now: datetime | None = None, on_record: Callable[[Record], None] | None = None
          ) -> PruneResult:
    """Remove unused images as ``docker image prune`` does (``all_images``: ``-a``;
    ``filters``: ``until``, ``label``, ``label!``, ``dangling`` as the engine takes them,
    or ``KEY=VALUE`` strings). ``on_record`` is told each ``Untagged``/``Deleted`` record
    as it happens; an interruption (Ctrl-C, a signal turned into an exception) leaves the
    records done so far in the exception's ``result``."""
    chosen = filters if isinstance(filters, dict) else prune_filters(filters)
    keep = unused_for_ns(unused_for) if unused_for is not None else None
    store.driver()  # an unsupported driver is refused before anything, even a plan
    if not dry_run:
        store.check_delete()
    deleter = Deleter(store, apply=not dry_run, on_record=on_record)
    dangling_only = not all_images and not chosen.get("dangling", set()) & {"false", "0"}
    try:
        plan = plan_prune(deleter, dangling_only=dangling_only, filters=chosen,
                          unused_for=keep, now=now or datetime.now(timezone.utc))
    except KeyboardInterrupt:
        raise PruneInterrupted(PruneResult(deleter, [], dry_run, interrupted=True)) from None
    return PruneResult(deleter, plan, dry_run)


class PruneInterrupted(ImageStoreError):
    """A prune stopped part way (Ctrl-C, or a signal the caller turned into one): what was
    done so far is in ``result``; every record in it is on disk."""

    def __init__(self, result: PruneResult) -> None:
        super().__init__(f"interrupted after {len(result.deleter.deleted)} image(s) deleted")
        self.result = result


def plan_prune(deleter: Deleter, *, dangling_only: bool, filters: dict[str, set[str]],
               unused_for: int | None, now: datetime) -> list[dict[str, Any]]:
    """moby's ``ImagesPrune`` on ``deleter``; returns the plan: every image of the store with
    what happened to it and why."""
    until = go_timestamp(next(iter(filters["until"])), now) \
        if "until" in filters else None
    start = {i: [r.ref for r in deleter.refs_of(i)] for i in deleter.nodes}
    reasons = {i: ("has child images" if dangling_only else
                   "intermediate image: no reference, has children") for i in deleter.nodes}
    candidates = listing.prune_candidates(deleter.store.index, dangling=dangling_only)
    configs = listing.configs_of(deleter.store.index, [i for i, _ in candidates]) \
        if "label" in filters or "label!" in filters else {}
    used: dict[str, tuple[datetime, str] | None] = {}
    cutoff = now - timedelta(microseconds=(unused_for or 0) // 1000)

    def recent(image_id: str) -> str | None:
        if unused_for is None or image_id not in deleter.nodes:
            return None
        if image_id not in used:
            used[image_id] = last_use(deleter.store.root, image_id,
                                      deleter.nodes[image_id].last_updated, deleter.containers)
        last = used[image_id]
        return f"{last[1]} at {last[0].isoformat()}, within --unused-for" \
            if last is not None and last[0] > cutoff else None

    deleter.protect = recent
    selected = []
    for image_id, created in candidates:
        ns = unix_ns(created)
        labels = config_labels(configs[image_id]) \
            if image_id in configs else None
        if until is not None and ns is not None and ns > until:
            reasons[image_id] = f"created {created}, after until"
        elif labels is not None and not labels_match(filters, labels):
            reasons[image_id] = "labels do not match the filters"
        elif (why := recent(image_id)) is not None:
            reasons[image_id] = f"used: {why}"
        else:
            selected.append(image_id)
    kind = "dangling" if dangling_only else "no container uses it"
    for image_id in selected:
        if image_id not in deleter.nodes:
            continue
        current = deleter.refs_of(image_id)
        if dangling_only and any(r.tagged for r in current):
            reasons[image_id] = "tagged: not dangling"
            continue
        targets: list[tuple[str | None, str]] = [(r.ref, r.full) for r in current] or \
            [(None, image_id[7:])]
        for key, given in targets:
            # moby's ImageDelete of each reference in turn: an earlier one may have taken
            # this one (the image deleted, or its digests untagged with its last tag).
            if key is not None and deleter.by_ref.get(key) != image_id:
                continue
            try:
                deleter.image_delete(given, image_id, force=False, prune=True, why=kind)
            except ImageConflict as exc:  # skipped quietly, as moby does
                deleter.why[image_id] = str(exc)
            except ImageStoreError as exc:  # moby logs it and goes on
                deleter.why[image_id] = f"failed: {exc}"
    plan = []
    for image_id, refs in start.items():
        action = "delete" if image_id not in deleter.nodes else \
            "untag" if len(deleter.refs.get(image_id, {})) < len(refs) else "keep"
        entry: dict[str, Any] = {"id": image_id, "refs": refs, "action": action,
                                 "reason": deleter.why.get(image_id, reasons[image_id])}
        if unused_for is not None:
            last = used.get(image_id)
            entry["last_used"] = last[0].isoformat() if last else None
        plan.append(entry)
    return sorted(plan, key=lambda e: ({"delete": 0, "untag": 1}.get(e["action"], 2), e["id"]))


def last_use(root: Root, image_id: str, last_updated: str | None,
             containers: Iterable[Container]) -> tuple[datetime, str] | None:
    """When the image was last used, tagged or arrived, as the disk tells (an LRU cleaner's
    clock): its containers' created, started and finished times, ``lastUpdated`` (written
    when a tag is added), and its content file's mtime (when the config arrived)."""
    times: list[tuple[datetime, str]] = []
    if last_updated:
        times.append((parse_time(last_updated), "tagged"))
    try:
        mtime = os.lstat(root.path / CONTENT / image_id[7:]).st_mtime
        times.append((datetime.fromtimestamp(mtime, timezone.utc), "arrived"))
    except OSError:
        pass
    for container in containers:
        if container.image == image_id:
            times += [(when, f"container {container.id[:12]} {what}")
                      for what, when in container.times]
    return max(times) if times else None


__all__ = ["PruneInterrupted", "PruneResult", "last_use", "plan_prune", "prune", "unused_for_ns"]
