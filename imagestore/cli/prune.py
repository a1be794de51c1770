"""``prune``, and what ``rm`` (in ``commands``) shares with it: deleting images as the daemon
deletes them (moby's ``ImageDelete`` and ``ImagesPrune``, daemon/images/image_delete.go and
image_prune.go of Docker 20.10), on a store whose daemon is not running.

The daemon decides on what it holds in memory: images, parent links, references, containers
and layer reference counts. ``Daemon`` holds the same, read from the index in one snapshot (no
config is read) and from the containers' files. Every decision is taken on it, and every
change is made on disk first (unless it only plans: ``--dry-run``) and then on it, so that a
dry run takes exactly the decisions a real run takes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click

from imagestore.cli.app import Context, cli, output_options, pass_ctx
from imagestore.cli.humanize import human_size
from imagestore.cli.output import emit
from imagestore.errors import ImageNotFound, ImageStoreError

if TYPE_CHECKING:
    from imagestore.cli.checks import Conflict, Container, Ref
    from imagestore.moby.drivers import Driver
    from imagestore.store import Store

CHILD, RUNNING, ACTIVE_REF, STOPPED = 1, 2, 4, 8  # moby's conflictType bits
HARD, SOFT = CHILD | RUNNING, ACTIVE_REF | STOPPED
Record = tuple[str, str]  # ("untagged", ref) or ("deleted", image or chain ID)


@dataclass
class Node:
    chain: str | None
    parent: str | None
    created: str | None
    last_updated: str | None


class Daemon:
    """The daemon's view of a store for deleting images, and the deletes themselves."""

    def __init__(self, store: Store, *, apply: bool) -> None:
        from imagestore.cli import checks, report
        from imagestore.index import listing

        self.store, self.apply = store, apply
        self.driver: Driver | None = store.driver()
        images, edges, refs, layers, mounts = listing.delete_graph(store.index)
        self.nodes = {i: Node(chain, None, created, last) for i, chain, created, last in images}
        self.children: dict[str, set[str]] = {}
        for child, parent in edges:
            if child in self.nodes:
                self.nodes[child].parent = parent
                self.children.setdefault(parent, set()).add(child)
        self.refs: dict[str, dict[str, Ref]] = {}
        self.by_ref: dict[str, str] = {}
        for ref, repo, tag, digest, image_id in refs:
            if image_id in self.nodes:
                self.refs.setdefault(image_id, {})[ref] = checks.Ref(
                    ref, repo, tag is not None, digest is not None, report.full_name(ref))
                self.by_ref[ref] = image_id
        self.layers = {c: (parent, size, cache) for c, parent, size, cache in layers}
        self.sizes = {c: int(size) for c, (_, size, _) in self.layers.items()}
        self.uses = Counter(n.chain for n in self.nodes.values() if n.chain)
        self.uses.update(parent for parent, _, _ in self.layers.values() if parent)
        self.uses.update(parent for _, parent in mounts if parent)
        found = checks.containers(store.root)
        # Outside a data-root the containers cannot be read: a mount stands for its container
        # (stopped), using every image whose top layer it sits on.
        self.containers: list[Container] = found if found is not None else []
        self.mounts = [] if found is not None else sorted((p, n) for n, p in mounts if p)
        self.done: list[Record] = []
        self.deleted: list[str] = []
        self.layers_removed: list[str] = []
        self.driver_bytes = 0
        self.failures: list[str] = []
        self.why: dict[str, str] = {}
        self.protect: Callable[[str], str | None] = lambda image_id: None

    # -- what the daemon asks --------------------------------------------------------------------
    def resolve(self, given: str) -> str:
        """docker's ``GetImage``: a full ID, a reference, then a unique ID prefix."""
        from imagestore.moby.digest import is_hex64, normalize_id
        from imagestore.moby.references import normalize_reference

        if not given or len(given) > 4096 or "\x00" in given:
            raise ImageNotFound(f"No such image: {given[:100]!r}")
        full = normalize_id(given)
        if full is not None and full in self.nodes:
            return full
        key = normalize_reference(given)
        image_id = self.by_ref.get(key)
        if image_id is None:
            try:
                image_id = self.store.search(given)
            except ImageNotFound:
                image_id = None
        if image_id not in self.nodes:  # as moby's ErrImageDoesNotExist names the reference
            raise ImageNotFound(f"No such image: {'sha256:' if is_hex64(given) else ''}{key}")
        return image_id

    def refs_of(self, image_id: str) -> list[Ref]:
        return sorted(self.refs.get(image_id, {}).values(), key=lambda r: r.full)

    def users(self, image_id: str) -> list[tuple[str, bool]]:
        """(container ID, running) of the containers created from the image."""
        chain = self.nodes[image_id].chain
        return [(c.id, c.running) for c in self.containers if c.image == image_id] + \
            [(name, False) for parent, name in self.mounts if parent == chain]

    def dangling(self, image_id: str) -> bool:
        return not self.refs.get(image_id) and not self.children.get(image_id)

    def conflict(self, image_id: str, mask: int) -> Conflict | None:
        """moby's ``checkImageDeleteConflict``, in its order."""
        from imagestore.cli.checks import Conflict
        from imagestore.moby.digest import truncate_id

        def found(message: str, *, hard: bool = False, used: bool = False) -> Conflict:
            force = "cannot be forced" if hard else "must be forced"
            return Conflict(f"conflict: unable to delete {truncate_id(image_id)} ({force}) - "
                            f"{message}", hard=hard, used=used)

        if mask & CHILD and self.children.get(image_id):
            return found("image has dependent child images", hard=True)
        users = self.users(image_id)
        running = next((c for c, up in users if up), None)
        if mask & RUNNING and running is not None:
            return found(f"image is being used by running container {truncate_id(running)}",
                         hard=True, used=True)
        if mask & ACTIVE_REF and self.refs.get(image_id):
            return found("image is referenced in multiple repositories")
        stopped = next((c for c, up in users if not up), None)
        if mask & STOPPED and stopped is not None:
            return found(f"image is being used by stopped container {truncate_id(stopped)}",
                         used=True)
        kept = self.protect(image_id) if mask & STOPPED else None
        return found(kept, used=True) if kept else None

    # -- what the daemon does --------------------------------------------------------------------
    def _untag(self, image_id: str, ref: str, records: list[Record]) -> None:
        from imagestore.cli import report

        if self.by_ref.get(ref) != image_id or (
                self.apply and not report.remove_reference(self.store, ref)):
            raise ImageStoreError(f"reference does not exist: {ref}")
        self.refs.get(image_id, {}).pop(ref, None)
        self.by_ref.pop(ref, None)
        records.append(("untagged", ref))
        self.done.append(("untagged", ref))

    def _release(self, chain: str | None) -> list[tuple[str, str]]:
        """Give back an image's reference to its top layer, as moby's layer store: (chain
        ID, cache ID) of each layer left unreferenced, top first."""
        out = []
        while chain is not None and chain in self.layers:
            self.uses[chain] -= 1
            if self.uses[chain] > 0:
                break
            parent, _, cache = self.layers.pop(chain)
            out.append((chain, cache))
            chain = parent
        return out

    def _delete(self, image_id: str, why: str, records: list[Record]) -> None:
        node = self.nodes[image_id]
        if self.apply:
            done = self.store.delete_image(image_id)
            self._release(node.chain)
            removed = [layer.chain_id for layer in done.layers]
            self.driver_bytes += done.driver_bytes
            self.failures += done.failures
        else:
            gone = self._release(node.chain)
            removed = [chain for chain, _ in gone]
            self.driver_bytes += sum(self._driver_size(cache) for _, cache in gone)
        for child in self.children.pop(image_id, ()):
            self.nodes[child].parent = None  # its parent file goes (moby's Store.Delete)
        if node.parent is not None:
            self.children.get(node.parent, set()).discard(image_id)
        del self.nodes[image_id]
        new = [("deleted", image_id)] + [("deleted", chain) for chain in removed]
        records += new
        self.done += new
        self.deleted.append(image_id)
        self.layers_removed += removed
        self.why[image_id] = why

    def check_release(self, image_id: str) -> None:
        """Raise now what the driver would refuse when deleting the image releases its
        layers (a link file that is not the layer's own), before an untag that precedes the
        delete is written: a refusal then leaves the image as it was."""
        driver, chain = self.driver, self.nodes[image_id].chain
        while driver is not None and chain in self.layers and self.uses[chain] <= 1:
            parent, _, cache = self.layers[chain]
            driver.check_release(cache)
            chain = parent

    def _driver_size(self, cache: str) -> int:
        try:
            return self.driver.size(cache) if self.driver is not None else 0
        except (OSError, ImageStoreError):
            return 0

    def delete_helper(self, image_id: str, records: list[Record], *, force: bool, prune: bool,
                      quiet: bool, why: str) -> None:
        """moby's ``imageDeleteHelper``, its recursion up the parents made a loop (a parent
        chain may be thousands of images deep)."""
        from imagestore.moby.digest import truncate_id

        while True:
            conflict = self.conflict(image_id, HARD if force else HARD | SOFT)
            if conflict is not None:
                if quiet and (not self.dangling(image_id) or conflict.used):
                    self.why[image_id] = str(conflict)
                    return
                raise conflict
            self.check_release(image_id)
            parent = self.nodes[image_id].parent
            for ref in self.refs_of(image_id):
                self._untag(image_id, ref.ref, records)
            self._delete(image_id, why, records)
            if not prune or parent is None or parent not in self.nodes:
                return
            why = f"parent of deleted {truncate_id(image_id)}, left without tag or child"
            image_id, force, quiet = parent, False, True

    def image_delete(self, given: str, image_id: str, *, force: bool, prune: bool,
                     why: str = "deleted as asked") -> list[Record]:
        """moby's ``ImageDelete`` of ``given`` (which resolved to ``image_id``)."""
        from imagestore.cli.checks import Conflict, single_reference
        from imagestore.moby.digest import truncate_id
        from imagestore.moby.references import normalize_reference, split_reference

        records: list[Record] = []
        refs = self.refs_of(image_id)
        removed_ref = False
        if not (image_id.startswith(given) or image_id[7:].startswith(given)):
            # A reference: it goes first (unless a container would be left on an untagged
            # image), and the image only with its last reference.
            users = self.users(image_id)
            if not force and single_reference(refs) and users:
                raise Conflict(f"conflict: unable to remove repository reference \"{given}\" "
                               f"(must force) - container {truncate_id(users[0][0])} is using its "
                               f"referenced image {truncate_id(image_id)}")
            key = normalize_reference(given)
            name, _, digest = split_reference(key)
            rest = [r for r in refs if r.ref != key]
            doomed = [key]  # and its repository's digests, when it held the last tag there
            if digest is None and not any(r.repository == name and not r.canonical
                                          for r in rest):
                doomed += [r.ref for r in rest if r.canonical and r.repository == name]
            if len(doomed) >= len(refs) and self.conflict(image_id, HARD | STOPPED) is None:
                self.check_release(image_id)
            for ref in doomed:
                self._untag(image_id, ref, records)
            refs = self.refs_of(image_id)
            if refs:
                self.why[image_id] = f"untagged {key}; other references remain"
                return records
            removed_ref = True
        elif single_reference(refs):
            conflict = self.conflict(image_id, HARD | (0 if force else STOPPED))
            if conflict is not None:
                raise conflict
            self.check_release(image_id)
            for r in refs:
                self._untag(image_id, r.ref, records)
        self.delete_helper(image_id, records, force=force, prune=prune, quiet=removed_ref,
                           why=why)
        return records

    def finish(self) -> None:
        """Bring the index's tags up to date once: untags rewrite ``repositories.json``
        without recording it, so a (warm) sync reads it again."""
        if self.apply and any(kind == "untagged" for kind, _ in self.done):
            self.store.sync()


def summary(daemon: Daemon) -> dict[str, Any]:
    """What a run removed, as ``--json`` reports it."""
    return {"deleted": daemon.deleted,
            "untagged": [v for k, v in daemon.done if k == "untagged"],
            "layers_removed": daemon.layers_removed, "driver_bytes": daemon.driver_bytes}


# -- prune -------------------------------------------------------------------------------------
def plan_prune(daemon: Daemon, *, dangling_only: bool, filters: dict[str, set[str]],
               unused_for: int | None, now: datetime) -> list[dict[str, Any]]:
    """moby's ``ImagesPrune`` on ``daemon``; returns the plan: every image of the store with
    what happened to it and why."""
    from imagestore.cli import checks
    from imagestore.index import listing

    until = checks.go_timestamp(next(iter(filters["until"])), now) \
        if "until" in filters else None
    start = {i: [r.ref for r in daemon.refs_of(i)] for i in daemon.nodes}
    reasons = {i: ("has child images" if dangling_only else
                   "intermediate image: no reference, has children") for i in daemon.nodes}
    candidates = listing.prune_candidates(daemon.store.index, dangling=dangling_only)
    configs = listing.configs_of(daemon.store.index, [i for i, _ in candidates]) \
        if "label" in filters or "label!" in filters else {}
    used: dict[str, tuple[datetime, str] | None] = {}
    cutoff = now - timedelta(microseconds=(unused_for or 0) // 1000)

    def recent(image_id: str) -> str | None:
        if unused_for is None or image_id not in daemon.nodes:
            return None
        if image_id not in used:
            used[image_id] = checks.last_use(daemon.store.root, image_id,
                                             daemon.nodes[image_id].last_updated,
                                             daemon.containers)
        last = used[image_id]
        return f"{last[1]} at {last[0].isoformat()}, within --unused-for" \
            if last is not None and last[0] > cutoff else None

    daemon.protect = recent
    selected = []
    for image_id, created in candidates:
        ns = checks.unix_ns(created)
        labels = checks.config_labels(image_id, configs[image_id]) \
            if image_id in configs else None
        if until is not None and ns is not None and ns > until:
            reasons[image_id] = f"created {created}, after until"
        elif labels is not None and not checks.labels_match(filters, labels):
            reasons[image_id] = "labels do not match the filters"
        elif (why := recent(image_id)) is not None:
            reasons[image_id] = f"used: {why}"
        else:
            selected.append(image_id)
    kind = "dangling" if dangling_only else "no container uses it"
    for image_id in selected:
        if image_id not in daemon.nodes:
            continue
        current = daemon.refs_of(image_id)
        if dangling_only and any(r.tagged for r in current):
            reasons[image_id] = "tagged: not dangling"
            continue
        try:
            for given in [r.full for r in current] or [image_id[7:]]:
                try:
                    daemon.image_delete(given, image_id, force=False, prune=True, why=kind)
                except checks.Conflict as exc:  # skipped quietly, as moby does
                    daemon.why[image_id] = str(exc)
        except ImageStoreError as exc:  # moby logs it and goes on with the next image
            daemon.why[image_id] = f"failed: {exc}"
    plan = []
    for image_id, refs in start.items():
        action = "delete" if image_id not in daemon.nodes else \
            "untag" if len(daemon.refs.get(image_id, {})) < len(refs) else "keep"
        entry: dict[str, Any] = {"id": image_id, "refs": refs, "action": action,
                                 "reason": daemon.why.get(image_id, reasons[image_id])}
        if unused_for is not None:
            last = used.get(image_id)
            entry["last_used"] = last[0].isoformat() if last else None
        plan.append(entry)
    return sorted(plan, key=lambda e: ({"delete": 0, "untag": 1}.get(e["action"], 2), e["id"]))


@cli.command()
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Every image no container uses, not just dangling ones.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="until=TIME|DURATION, label=K[=V], label!=K[=V] (as docker's).")
@click.option("--unused-for", metavar="DURATION",
              help="Keep images used, tagged or arrived within DURATION (e.g. 72h, 30d).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("-f", "--force", "_no_prompt", is_flag=True, hidden=True,
              help="Accepted for docker's sake: imagestore never prompts.")
@output_options()
@pass_ctx
def prune(ctx: Context, all_images: bool, filters: tuple[str, ...], unused_for: str | None,
          dry_run: bool, _no_prompt: bool, fmt: str | None) -> None:
    """Remove unused images as `docker image prune` does; report the space reclaimed."""
    from imagestore.cli import checks

    chosen = checks.prune_filters(filters)
    keep = None
    if unused_for is not None:
        keep = checks.go_duration(unused_for, {"d": 24 * 3600 * 10**9})
        if keep is None or keep < 0:
            raise click.UsageError(f"--unused-for: not a duration: {unused_for!r}")
    store = ctx.store(write=not dry_run)
    store.driver()  # an unsupported driver is refused before anything, even a plan
    if not dry_run:
        store.check_delete()
    daemon = Daemon(store, apply=not dry_run)
    dangling_only = not all_images and not chosen.get("dangling", set()) & {"false", "0"}
    try:
        plan = plan_prune(daemon, dangling_only=dangling_only, filters=chosen,
                          unused_for=keep, now=datetime.now(timezone.utc))
    finally:
        daemon.finish()
    data = {**summary(daemon),
            "space_reclaimed": sum(daemon.sizes.get(c, 0) for c in daemon.layers_removed),
            "plan": plan}
    if dry_run:
        data["dry_run"] = True

    def text(d: dict[str, Any]) -> str:
        out = ""
        if daemon.done:
            out = ("Would delete Images:\n" if dry_run else "Deleted Images:\n") + "".join(
                f"{kind}: {value}\n" for kind, value in daemon.done) + "\n"
        if dry_run:
            out += "".join(f"{e['action']:<6}  {e['id']}  {' '.join(e['refs']) or '<none>'}: "
                           f"{e['reason']}\n" for e in plan) + "\n"
        total = human_size(d["space_reclaimed"], precision=4)  # units.HumanSize
        return out + (f"Total reclaimable space: {total} (dry run: nothing was changed)\n"
                      if dry_run else f"Total reclaimed space: {total}\n")

    emit(data, fmt, text)
    for failure in daemon.failures:
        click.echo(f"imagestore: warning: {failure}", err=True)


__all__ = ["Daemon", "plan_prune", "prune", "summary"]
