"""What fsck and prune look at beyond the sync's own rules. For fsck, each function takes
what a rebuild from the disk found and returns findings, each with a suggested action and
whether ``fsck --repair`` may act on it (only on what nothing else refers to). For prune,
what the daemon judges an image by besides the store: its containers, its labels, docker's
times and durations, and (beyond docker) when it was last used."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from imagestore.errors import ImageStoreError, InvalidImageConfig
from imagestore.moby.digest import chain_id, is_image_id, is_text
from imagestore.moby.files import read_regular
from imagestore.moby.image import Image, parse_time
from imagestore.moby.imagedb import METADATA_KEYS
from imagestore.moby.layerdb import LAYER_FILES, MOUNT_FILES
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root
from imagestore.sync import Problem, ProblemKind
from imagestore.sync.scan import Scan, names

Contents = dict[str, set[tuple[Any, ...]]]


@dataclass(frozen=True)
class Finding:
    path: str
    check: ProblemKind | str  # a str: a kind of the graph driver's or of a layer's data
    message: str
    action: str
    repairable: bool = False
    subject: str = ""  # what a repair acts on, where the path does not say (an image ID)

    @classmethod
    def of(cls, kind: ProblemKind, path: str, message: str, *, action: str | None = None,
           repairable: bool | None = None, subject: str = "") -> Finding:
        return cls(path, kind, message, action or kind.action,
                   kind.repairable if repairable is None else repairable, subject)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "check": str(self.check), "message": self.message,
                "action": self.action}


def from_problems(problems: list[Problem], root: Root, truth: Contents) -> list[Finding]:
    """What the rebuild skipped. A content file whose layers are missing (a ``create`` that
    failed, as moby's leaves it) may go when no tag, child or container refers to it."""
    referred = ({str(row[1]) for row in truth["tag"]} | {str(row[1]) for row in truth[
        "parent link"]} | containers_using(root))
    out = []
    for p in problems:
        kind = p.kind if isinstance(p.kind, ProblemKind) else ProblemKind.INDEX
        if kind == ProblemKind.MISSING_LAYER and p.path.startswith(CONTENT):
            image_id = "sha256:" + p.path[len(CONTENT):]
            free = image_id not in referred
            out.append(Finding.of(kind, p.path, p.reason, repairable=free, action=(
                "nothing refers to it: fsck --repair removes it" if free else
                "a tag, a child or a container refers to it: pull or load its layers")))
        else:
            out.append(Finding.of(kind, p.path, p.reason))
    return out


def leftovers(root: Root, content: set[str], layers: Scan, *, removing: bool = True
              ) -> list[Finding]:
    """Metadata of images with no content (``content``: the content folder's names), and
    layer folders of an interrupted delete (found in the ``layers`` scan) unless not
    ``removing`` (the graph driver's check reports those, and finishes them)."""
    findings = []
    for name in sorted(names(root, METADATA)):
        if is_text(name) and name not in content:
            findings.append(Finding.of(ProblemKind.ORPHAN_METADATA, METADATA + name,
                                       "metadata of an image with no content"))
    for name in sorted(layers.others):
        if removing and name.endswith("-removing") and is_text(name):
            findings.append(Finding.of(ProblemKind.TEMP_FILE, LAYERS + name,
                                       "layer folder of an interrupted delete"))
    return findings


def special_files(root: Root, scans: dict[str, Scan]) -> list[Finding]:
    """Metadata, layer and mount files that exist but are not regular files (a FIFO, a
    device, a folder, a symlink): the sync reads them as absent or empty. ``scans``: the
    metadata, layer and mount folders' scans."""
    findings = []
    for kind, files, problem in ((METADATA, METADATA_KEYS, ProblemKind.BAD_METADATA),
                                 (LAYERS, LAYER_FILES, ProblemKind.BAD_LAYER),
                                 (MOUNTS, MOUNT_FILES, ProblemKind.BAD_MOUNT)):
        for name in sorted(scans[kind].names):
            for file in files:
                path = f"{kind}{name}/{file}"
                try:
                    mode = os.lstat(root.path / path).st_mode
                except OSError:
                    continue
                if not stat.S_ISREG(mode):
                    findings.append(Finding.of(problem, path,
                                               f"{file} is {_what(mode)}, not a regular file"))
    return findings


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISLNK, "a symlink"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def dangling_tags(content: set[str], truth: Contents) -> list[Finding]:
    """References in ``repositories.json`` to an image with no content file at all (one
    that is there but does not load is reported for itself)."""
    return [Finding.of(ProblemKind.DANGLING_TAG, f"{REPOSITORIES}#{ref}",
                       f"names {image_id}, which is not in the store", subject=image_id)
            for ref, image_id in sorted(truth["tag"]) if image_id[7:] not in content]


def links(truth: Contents, configs: dict[str, bytes]) -> list[Finding]:
    """Parent links, layer chains and unreferenced layers, on the verified state."""
    findings = []
    for child, parent in sorted(truth["parent link"], key=str):
        if parent not in configs:
            findings.append(Finding.of(ProblemKind.PARENT, METADATA + child[7:] + "/parent",
                                       f"names {parent}, which is not in the store"))
    layers = {str(r[0]): r for r in truth["layer"]}
    used: set[str] = set()
    for image_id, raw in sorted(configs.items()):
        diff_ids = Image(image_id, raw).rootfs.diff_ids
        # Every prefix's chain ID, aligned with the diff IDs ("" is one to Go's decoder).
        chains = [chain_id(diff_ids[: i + 1]) or "" for i in range(len(diff_ids))]
        used.update(chains)
        for i, (chain, diff) in enumerate(zip(chains, diff_ids, strict=True)):
            layer = layers.get(chain)
            if layer is None or layer[1] != diff or layer[2] != (chains[i - 1] if i else None):
                findings.append(Finding.of(ProblemKind.LAYER_CHAIN, CONTENT + image_id[7:],
                                           f"layer {i} ({chain}) is missing or inconsistent"))
                break
    mounted = {r[1] for r in truth["mount"] if r[1]}
    parents = {r[2] for r in truth["layer"]}
    for chain in sorted(layers):
        if chain not in used and chain not in mounted and chain not in parents:
            findings.append(Finding.of(ProblemKind.UNREFERENCED_LAYER, LAYERS + chain[7:],
                                       "no image and no container uses this layer"))
    return findings


# -- containers, as the daemon loads them ----------------------------------------------------
@dataclass(frozen=True)
class Container:
    """A container of the data-root, as the daemon loads it from ``config.v2.json``:
    ``image`` is the image ID it was created from, ``times`` its created, started and
    finished times (those that are set)."""

    id: str
    image: str
    running: bool
    times: tuple[tuple[str, datetime], ...] = ()


def _time(value: object) -> datetime | None:
    """A container time; Go's zero time (never started) is ``None``."""
    if not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    try:
        return parse_time(value)
    except InvalidImageConfig:
        return None


def containers(root: Root) -> list[Container] | None:
    """The containers of this data-root, by ID; ``None`` when the root is not inside a
    data-root (no ``containers`` folder to read). A container whose config cannot be read is
    skipped, as the daemon skips it when it loads."""
    folder = root.path.parent.parent / "containers"
    if root.path.parent.name != "image" or not folder.is_dir() or folder.is_symlink():
        return None
    found = []
    with os.scandir(folder) as entries:  # a symlinked entry is not followed out
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    for name in names:
        try:
            config = json.loads(read_regular(folder / name / "config.v2.json"))
        except (OSError, ValueError, RecursionError):
            continue
        image = config.get("Image") if isinstance(config, dict) else None
        if not isinstance(image, str) or not is_image_id(image):
            continue
        state = config.get("State")
        state = state if isinstance(state, dict) else {}
        times = ((what, _time(value)) for what, value in (
            ("created", config.get("Created")), ("started", state.get("StartedAt")),
            ("finished", state.get("FinishedAt"))))
        found.append(Container(name, image, state.get("Running") is True,
                               tuple((w, t) for w, t in times if t is not None)))
    return found


def containers_using(root: Root) -> set[str]:
    """Image IDs that containers of this data-root were created from."""
    return {c.image for c in containers(root) or ()}


# -- moby's delete rules (``rm``, ``prune``) ------------------------------------------------
class Conflict(ImageStoreError):
    """moby's delete conflicts: ``hard`` ones cannot be forced; ``used``: a container (or,
    beyond moby, recent use) keeps the image."""

    def __init__(self, message: str, *, hard: bool = False, used: bool = False) -> None:
        super().__init__(message)
        self.hard, self.used = hard, used


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


# -- what prune filters by -------------------------------------------------------------------
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


# -- docker's times and durations (``--filter until=``) ----------------------------------------
_NS = 1_000_000_000
_GO_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 1_000_000, "s": _NS,
             "m": 60 * _NS, "h": 3600 * _NS}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")
_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_ZONE = r"(Z|[+-][0-9]{2}:[0-9]{2})"
_FRACTION = re.compile(r"T[0-9]{2}:[0-9]{2}:[0-9]{2}\.([0-9]{1,9})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def go_duration(text: str, units: dict[str, int] | None = None) -> int | None:
    """Go's ``time.ParseDuration`` in nanoseconds (``None``: not a duration); ``units``
    adds units of one's own."""
    table = {**_GO_UNITS, **(units or {})}
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if rest == "0":
        return 0
    total, pos = Fraction(0), 0
    while rest and pos < len(rest):
        m = _DURATION_PART.match(rest, pos)
        if m is None or m[1] in ("", ".") or m[2] not in table:
            return None
        total += Fraction(m[1]) * table[m[2]]
        pos = m.end()
    return sign * int(total) if rest and abs(total) < 1 << 63 else None


def unix_ns(text: str | None) -> int | None:
    """An RFC 3339 time as Unix nanoseconds (Go keeps nanoseconds; ``datetime`` does not)."""
    if not text:
        return None
    try:
        when = parse_time(text)
    except InvalidImageConfig:
        return None
    fraction = _FRACTION.search(text)
    seconds = (when.replace(microsecond=0) - _EPOCH) // timedelta(seconds=1)
    return seconds * _NS + (int(fraction[1].ljust(9, "0")) if fraction else 0)


def go_timestamp(value: str, now: datetime) -> int:
    """moby's ``GetTimestamp`` then ``ParseTimestamps`` (api/types/time): a duration before
    ``now`` (whole seconds), an RFC 3339-like time (the daemon's local zone when it names
    none), or Unix seconds; as Unix nanoseconds. ``ImageStoreError`` when it is none."""
    duration = go_duration(value) if value != "0" else None
    if duration is not None:
        return ((now - _EPOCH) // timedelta(microseconds=1) * 1000 - duration) // _NS * _NS
    local = not (any(c in value for c in "zZ+") or value.count("-") == 3)
    zone = "" if local else _ZONE
    if "." in value:
        form = rf"{_DATE}T([0-9]{{2}}):([0-9]{{2}}):([0-9]{{2}})(?:\.[0-9]{{1,9}})?{zone}"
    elif "T" in value:
        colons = value.count(":") - (0 if local or "Z" in value.upper() else 1)
        form = _DATE + "T([0-9]{2})" + ("" if colons < 1 else ":([0-9]{2})") + \
            ("" if colons < 2 else r":([0-9]{2})(?:\.[0-9]{1,9})?") + zone
    else:
        form = _DATE + zone
    m = re.fullmatch(form, value)
    if m is None:
        if "-" in value or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
            raise ImageStoreError(f"failed to parse value as time or duration: {value!r}")
        seconds, _, fraction = value.partition(".")
        return int(seconds) * _NS + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
    if local:
        text = m[0] if "T" in m[0] else m[0] + "T00"
        text += ":00" * (2 - text.count(":"))
        offset = now.astimezone().strftime("%z")
        text += f"{offset[:3]}:{offset[3:]}"
    else:
        head = m[0][:len(m[0]) - len(m[m.lastindex or 0])]
        head = head if "T" in head else head + "T00"
        text = head + ":00" * (2 - head.count(":")) + m[m.lastindex or 0]
    ns = unix_ns(text)
    if ns is None:
        raise ImageStoreError(f"failed to parse value as time or duration: {value!r}")
    return ns


__all__ = ["Container", "Finding", "config_labels", "containers", "containers_using",
           "dangling_tags", "from_problems", "go_duration", "go_timestamp", "labels_match",
           "last_use", "leftovers", "links", "special_files", "unix_ns"]
