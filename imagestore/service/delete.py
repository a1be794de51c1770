"""Deleting images as the daemon deletes them (moby daemon/images/image_delete.go
``ImageDelete`` of Docker 20.10), on a store whose daemon is not running: what ``rm``,
``prune`` and ``store.images.remove``/``prune`` share.

The daemon decides on what it holds in memory: images, parent links, references, containers
and layer reference counts (BuildKit's among them). ``Deleter`` holds the same, read from
the index in one snapshot (no config is read) and from the containers' files. Every decision
is taken on it, and every change is made on disk first (unless it only plans: a dry run) and
then on it, so that a dry run takes exactly the decisions a real run takes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagestore.errors import ImageConflict, ImageNotFound, ImageStoreError
from imagestore.index import listing
from imagestore.moby.containers import Container, containers
from imagestore.moby.digest import truncate_id
from imagestore.moby.references import full_name, normalize_reference, split_reference
from imagestore.moby.root import CONTENT

if TYPE_CHECKING:
    from imagestore.moby.drivers import Driver
    from imagestore.store import Store

CHILD, RUNNING, ACTIVE_REF, STOPPED = 1, 2, 4, 8  # moby's conflictType bits
HARD, SOFT = CHILD | RUNNING, ACTIVE_REF | STOPPED
Record = tuple[str, str]  # ("untagged", ref) or ("deleted", image or chain ID)


@dataclass(frozen=True)
class Ref:
    """A reference of ``repositories.json``: ``ref`` its key, ``full`` its normalised form
    (the reference store's order)."""

    ref: str
    repository: str
    tagged: bool
    canonical: bool
    full: str


def single_reference(refs: list[Ref]) -> bool:
    """moby's ``isSingleReference``: at most one tag, and every reference in one repository."""
    if len(refs) <= 1:
        return len(refs) == 1
    single, canonical = None, set()
    for r in refs:
        if r.canonical:
            canonical.add(r.repository)
        elif single is None:
            single = r
        else:
            return False
    return len(canonical) == 1 and (single or refs[0]).repository in canonical


@dataclass
class GraphNode:
    chain: str | None
    parent: str | None
    created: str | None
    last_updated: str | None


class Deleter:
    """The daemon's view of a store for deleting images, and the deletes themselves."""

    def __init__(self, store: Store, *, apply: bool,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.store, self.apply, self.on_record = store, apply, on_record
        self.driver: Driver | None = store.driver()
        images, edges, refs, layers, mounts = listing.delete_graph(store.index)
        self.nodes = {i: GraphNode(chain, None, created, last)
                      for i, chain, created, last in images}
        self.children: dict[str, set[str]] = {}
        for child, parent in edges:
            if child in self.nodes:
                self.nodes[child].parent = parent
                self.children.setdefault(parent, set()).add(child)
        self.refs: dict[str, dict[str, Ref]] = {}
        self.by_ref: dict[str, str] = {}
        for ref, repo, tag, digest, image_id in refs:
            if image_id in self.nodes:
                self.refs.setdefault(image_id, {})[ref] = Ref(
                    ref, repo, tag is not None, digest is not None, full_name(ref))
                self.by_ref[ref] = image_id
        self.layers = {c: (parent, size, cache) for c, parent, size, cache in layers}
        self.sizes = {c: int(size) for c, (_, size, _) in self.layers.items()}
        self.uses = Counter(n.chain for n in self.nodes.values() if n.chain)
        self.uses.update(parent for parent, _, _ in self.layers.values() if parent)
        self.uses.update(parent for _, parent in mounts if parent)
        self.uses.update(store.held_layers())  # BuildKit's references: never released
        found = containers(store.root)
        # Outside a data-root the containers cannot be read: a mount stands for its container
        # (stopped), using every image whose top layer it sits on.
        self.containers: list[Container] = found if found is not None else []
        self.mounts = [] if found is not None else sorted((p, n) for n, p in mounts if p)
        self.done: list[Record] = []  # everything done, in order
        # What the engine's API answers: the records of each ImageDelete that returned (one
        # that fails after deleting something answers only its error, as moby's does).
        self.reported: list[Record] = []
        self.deleted: list[str] = []
        self.layers_removed: list[str] = []
        self.driver_bytes = 0
        self.failures: list[str] = []
        self.why: dict[str, str] = {}
        self.protect: Callable[[str], str | None] = lambda image_id: None

    # -- what the daemon asks --------------------------------------------------------------------
    def resolve(self, given: str) -> str:
        """docker's ``GetImage`` (``Reading.resolve``), on the images still here."""
        image_id = self.store.resolve(given)
        if image_id not in self.nodes:
            raise ImageNotFound(f"No such image: {given}")
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

    def conflict(self, image_id: str, mask: int) -> ImageConflict | None:
        """moby's ``checkImageDeleteConflict``, in its order."""
        def found(message: str, *, hard: bool = False, used: bool = False) -> ImageConflict:
            force = "cannot be forced" if hard else "must be forced"
            return ImageConflict(f"conflict: unable to delete {truncate_id(image_id)} "
                                 f"({force}) - {message}", hard=hard, used=used)

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
        if self.by_ref.get(ref) != image_id or (self.apply and not self.store.untag(ref)):
            raise ImageStoreError(f"reference does not exist: {ref}")
        self.refs.get(image_id, {}).pop(ref, None)
        self.by_ref.pop(ref, None)
        self._record(records, [("untagged", ref)])

    def _record(self, records: list[Record], new: list[Record]) -> None:
        records += new
        self.done += new
        if self.on_record is not None:
            for record in new:
                self.on_record(record)

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
        self._record(records, new)
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
            if not prune or parent is None:
                return
            if parent not in self.nodes:
                # moby's helper asks the image store for the parent it would prune: a parent
                # file naming a missing image fails the ImageDelete, after the delete.
                missing = self.store.root.path / CONTENT / parent[7:]
                raise ImageStoreError(f"failed to get digest {parent}: open {missing}: no such "
                                      f"file or directory")
            why = f"parent of deleted {truncate_id(image_id)}, left without tag or child"
            image_id, force, quiet = parent, False, True

    def image_delete(self, given: str, image_id: str, *, force: bool, prune: bool,
                     why: str = "deleted as asked") -> list[Record]:
        """moby's ``ImageDelete`` of ``given`` (which resolved to ``image_id``): its
        records, which are ``reported`` only when it returns."""
        records = self._image_delete(given, image_id, force=force, prune=prune, why=why)
        self.reported += records
        return records

    def _image_delete(self, given: str, image_id: str, *, force: bool, prune: bool,
                      why: str) -> list[Record]:
        records: list[Record] = []
        refs = self.refs_of(image_id)
        removed_ref = False
        if not (image_id.startswith(given) or image_id[7:].startswith(given)):
            # A reference: it goes first (unless a container would be left on an untagged
            # image), and the image only with its last reference.
            users = self.users(image_id)
            if not force and single_reference(refs) and users:
                raise ImageConflict(
                    f"conflict: unable to remove repository reference \"{given}\" (must "
                    f"force) - container {truncate_id(users[0][0])} is using its referenced "
                    f"image {truncate_id(image_id)}")
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


@dataclass
class Removal:
    """What ``docker rmi`` of several names did: the deleter (its records, in order) and
    the error of each name that failed (the others went on, as docker goes on)."""

    deleter: Deleter
    errors: list[ImageStoreError]


def remove(store: Store, names: Iterable[str], *, force: bool = False, prune: bool = True,
           on_record: Callable[[Record], None] | None = None) -> Removal:
    """``docker rmi NAME...`` (``-f``: ``force``; ``--no-prune``: not ``prune``). What
    could refuse for all of them (a daemon, a driver, a mount) is refused first."""
    store.check_delete()
    deleter = Deleter(store, apply=True, on_record=on_record)
    errors: list[ImageStoreError] = []
    for given in names:
        try:
            image_id = deleter.resolve(given)
            deleter.image_delete(given, image_id, force=force, prune=prune)
        except ImageStoreError as failed:
            errors.append(failed)
    return Removal(deleter, errors)


def summary(deleter: Deleter, records: list[Record]) -> dict[str, Any]:
    """``records`` (the engine's answer, ``reported``, or all that was ``done``) as
    ``--json`` reports them, with the graph-driver bytes freed."""
    images = set(deleter.deleted)
    gone = [v for k, v in records if k == "deleted"]
    return {"deleted": [v for v in gone if v in images],
            "untagged": [v for k, v in records if k == "untagged"],
            "layers_removed": [v for v in gone if v not in images],
            "driver_bytes": deleter.driver_bytes}


def api_items(records: list[Record]) -> list[dict[str, str]]:
    """Records as the engine's API answers them (``types.ImageDeleteResponseItem``)."""
    return [{"Untagged" if kind == "untagged" else "Deleted": value} for kind, value in records]


__all__ = ["Deleter", "Record", "Ref", "Removal", "api_items", "remove", "single_reference",
           "summary"]
