"""What Docker 29's containerd image service knows of one image before it answers: moby
daemon/containerd image_list.go ``multiPlatformSummary`` (each platform manifest's kind,
availability, content and unpacked sizes, containers, and the best manifest), image_manifest.go
(``walkReachableImageManifests``, ``IsPseudoImage``, ``CheckContentAvailable``,
``SnapshotUsage``), handlers.go (``walkPresentChildren``), platform_matchers.go and
containerd/platforms (``Only``'s preference order), containerd core/images mediatypes.go
(``IsLayerType``), and the image config as Go decodes it into ``dockerspec.DockerOCIImage``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.images import Image, Manifest, chain_ids
from imagestore.containerd.meta import Descriptor
from imagestore.service.docker29_refs import is_digest
from imagestore.service.inspect import (
    BOOL,
    INT,
    SET,
    STR,
    STR_MAP,
    STRINGS,
    Field,
    Ptr,
    Slice,
    Struct,
    _decode,
    _encode,
    _Pairs,
)

JSON = dict[str, Any]
REFERENCE_TYPE = "vnd.docker.reference.type"  # buildkit attestation annotations
REFERENCE_DIGEST = "vnd.docker.reference.digest"
_DOCKER_LAYERS = frozenset({
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.erofs.layer.v1"})


def is_layer_type(media_type: str) -> bool:
    """containerd ``images.IsLayerType`` (Docker's types with any ``+suffix``)."""
    return media_type.startswith("application/vnd.oci.image.layer.") \
        or media_type.partition("+")[0] in _DOCKER_LAYERS


# -- the image config as moby decodes it (dockerspec.DockerOCIImage) ------------------------
_HEALTHCHECK = Struct((Field("Test", STRINGS, True), Field("Interval", INT, True),
                       Field("Timeout", INT, True), Field("StartPeriod", INT, True),
                       Field("StartInterval", INT, True), Field("Retries", INT, True)))
IMAGE_CONFIG = Struct((
    Field("User", STR, True), Field("ExposedPorts", SET, True), Field("Env", STRINGS, True),
    Field("Entrypoint", STRINGS, True), Field("Cmd", STRINGS, True),
    Field("Volumes", SET, True), Field("WorkingDir", STR, True), Field("Labels", STR_MAP, True),
    Field("StopSignal", STR, True), Field("ArgsEscaped", BOOL, True),
    Field("Healthcheck", Ptr(_HEALTHCHECK), True), Field("OnBuild", STRINGS, True),
    Field("Shell", STRINGS, True)))
_HISTORY = Struct((Field("created", STR), Field("created_by", STR), Field("author", STR),
                   Field("comment", STR), Field("empty_layer", BOOL)))
_IMAGE = Struct((
    Field("created", STR), Field("author", STR), Field("architecture", STR), Field("os", STR),
    Field("os.version", STR), Field("os.features", STRINGS), Field("variant", STR),
    Field("config", IMAGE_CONFIG), Field("rootfs", Struct((Field("type", STR),
                                                           Field("diff_ids", STRINGS)))),
    Field("history", Slice(_HISTORY))))


def go_config(raw: bytes | None) -> JSON:
    """The config decoded into ``DockerOCIImage``; its zero value when absent or not a JSON
    object (moby then goes on with the zero value). ``created`` stays text, "" for none."""
    if raw is not None:
        try:
            doc = json.loads(raw.decode("utf-8", "replace"), object_pairs_hook=_Pairs)
        except ValueError:
            doc = None
        if isinstance(doc, _Pairs):
            decoded: JSON = _decode(_IMAGE, None, doc)
            return decoded
    return _IMAGE.zero()


def encode_config(config: JSON) -> JSON:
    """``DockerOCIImageConfig`` as the engine writes it (every field ``omitempty``)."""
    encoded: JSON = _encode(IMAGE_CONFIG, config)
    return encoded


def platform_of_config(cfg: JSON) -> JSON:
    """``ocispec.Platform`` from a decoded config, as Go marshals it."""
    return platform_json({"architecture": cfg["architecture"], "os": cfg["os"],
                          "os.version": cfg["os.version"], "os.features": cfg["os.features"],
                          "variant": cfg["variant"]})


def platform_json(value: Mapping[str, Any]) -> JSON:
    """An ``ocispec.Platform`` re-marshalled: ``architecture`` and ``os`` always, the rest
    when set."""
    out: JSON = {"architecture": _str(value.get("architecture")), "os": _str(value.get("os"))}
    if _str(value.get("os.version")):
        out["os.version"] = value["os.version"]
    features = value.get("os.features")
    if isinstance(features, list) and features:
        out["os.features"] = [_str(f) for f in features]
    if _str(value.get("variant")):
        out["variant"] = value["variant"]
    return out


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def descriptor_json(value: Descriptor | Mapping[str, Any]) -> JSON:
    """An ``ocispec.Descriptor`` as Go marshals it: an image record's target, or an index
    entry as written (``urls``, ``annotations``, ``data``, ``platform``, ``artifactType``
    when set)."""
    if isinstance(value, Descriptor):
        out: JSON = {"mediaType": value.media_type, "digest": value.digest, "size": value.size}
        if value.annotations:
            out["annotations"] = dict(sorted(value.annotations.items()))
        return out
    size = value.get("size")
    out = {"mediaType": _str(value.get("mediaType")), "digest": _str(value.get("digest")),
           "size": size if type(size) is int else 0}
    for key in ("urls", "annotations", "data", "platform", "artifactType"):
        item = value.get(key)
        if not item:
            continue
        if key == "platform" and isinstance(item, dict):
            item = platform_json(item)
        elif key == "annotations" and isinstance(item, dict):
            item = {str(k): _str(v) for k, v in sorted(item.items())}
        out[key] = item
    return out


# -- platforms: containerd/platforms Normalize, Only(host) and its Less ----------------------
def _normalize(p: Mapping[str, Any]) -> tuple[str, str, str, tuple[str, ...]]:
    os_name = _str(p.get("os")).lower()
    os_name = "darwin" if os_name == "macos" else os_name
    arch, variant = _str(p.get("architecture")).lower(), _str(p.get("variant")).lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        variant = "" if variant in ("8", "v8", "v8.0") else \
            "v9" if variant in ("9", "9.0", "v9.0") else variant
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = "v7" if variant in ("", "7") else \
            "v" + variant if variant in ("5", "6", "8") else variant
    features = p.get("os.features")
    feats = tuple(sorted({_str(f) for f in features})) if isinstance(features, list) else ()
    return os_name, arch, variant, feats


def _vector(host: c.Platform) -> list[tuple[str, str, str]]:
    """``platformVector``: the host platform and those it also runs, best first."""
    os_name, arch, variant, _ = _normalize({"os": host.os, "architecture": host.architecture,
                                            "variant": host.variant})
    out = [(os_name, arch, variant)]
    level = variant[1:] if variant.startswith("v") else variant
    if arch == "amd64":
        if level.isdigit() and int(level) > 1:
            out += [(os_name, "amd64", f"v{v}" if v > 1 else "")
                    for v in range(int(level) - 1, 0, -1)]
        out.append((os_name, "386", ""))
    elif arch == "arm":
        if level.isdigit() and int(level) > 5:
            out += [(os_name, "arm", f"v{v}") for v in range(int(level) - 1, 4, -1)]
    elif arch == "arm64":
        out = [(os_name, "arm64", v) for v in _arm64_variants(variant or "v8")]
        if not variant or variant.startswith(("v8", "v9")):
            out += [(os_name, "arm", f"v{v}") for v in (8, 7, 6, 5)]
    return out


def _arm64_variants(variant: str) -> list[str]:
    """``arm64variantToVersion``: v9.x also runs v9.0… and v8.(x+5)…; v8.x runs v8.0…
    (``v8``/``v8.0`` normalised to "", ``v9.0`` to ``v9``)."""
    major, _, minor = variant[1:].partition(".")
    if variant[:1] != "v" or major not in ("8", "9") or (minor and not minor.isdigit()) \
            or int(minor or 0) > 9 or (major == "9" and int(minor or 0) > 7):
        return []
    pairs = [(int(major), int(minor or 0))]
    if major == "9":
        pairs.append((8, min(int(minor or 0) + 5, 9)))
    out = []
    for big, top in pairs:
        for small in range(top, -1, -1):
            name = f"v{big}" if small == 0 else f"v{big}.{small}"
            out.append("" if name == "v8" else name)
    return out


@dataclass(frozen=True)
class Matcher:
    """``matchAnyWithPreference(platforms.Only(host))``: every platform matches; the host's
    own, then those it runs, come first."""

    host: c.Platform

    def _index(self, p: Mapping[str, Any], strip: bool) -> int | None:
        os_name, arch, variant, feats = _normalize(p)
        if feats and not strip:  # the host matcher has no OS features
            return None
        for i, want in enumerate(_vector(self.host)):
            if want == (os_name, arch, variant):
                return i
        return None

    def less(self, p1: Mapping[str, Any], p2: Mapping[str, Any]) -> bool:
        """``orderedPlatformComparer.Less``."""
        for strip in (False, True):
            i1, i2 = self._index(p1, strip), self._index(p2, strip)
            if i1 is not None or i2 is not None:
                return i1 is not None and (i2 is None or i1 < i2)
            if not (_normalize(p1)[3] or _normalize(p2)[3]):
                return False
        return False


# -- one manifest of an image, as multiPlatformSummary sees it -------------------------------
@dataclass
class View:
    """A platform manifest reached from an image's target, in the engine's walk order."""

    descriptor: JSON  # the index entry (or the record's target) as the engine writes it
    manifest: Manifest | None  # None: the blob is missing
    available: bool = False
    kind: str = "unknown"
    content: int = 0
    blobs: list[tuple[str, int]] = field(default_factory=list)  # present descriptors
    attestation_for: str | None = None
    platform: JSON | None = None  # ImageData.Platform (image kind only)
    chains: list[str] | None = None  # None: the config has no diff_ids
    unpacked: int = 0
    containers: list[str] = field(default_factory=list)
    config: JSON = field(default_factory=dict)

    def summary(self) -> JSON:
        """``ManifestSummary``."""
        out: JSON = {"ID": self.descriptor["digest"], "Descriptor": self.descriptor,
                     "Available": self.available,
                     "Size": {"Content": self.content, "Total": self.content + self.unpacked},
                     "Kind": self.kind}
        if self.kind == "image":
            out["ImageData"] = {"Platform": self.platform or {},
                                "Size": {"Unpacked": self.unpacked},
                                "Containers": list(self.containers) or None}
        if self.attestation_for is not None:
            out["AttestationData"] = {"For": self.attestation_for}
        return out


def usage_of(images: Iterable[Image]) -> dict[str, int]:
    """Each committed snapshot's own usage by chain ID (``snapshotter.Usage``)."""
    out: dict[str, int] = {}
    for image in images:
        for m in image.manifests:
            for layer in m.layers:
                if layer.chain_id and layer.unpacked is not None:
                    out[layer.chain_id] = layer.unpacked
    return out


def total_usage(chains: list[str], usage: Mapping[str, int]) -> int:
    """``calculateSnapshotTotalUsage`` of the top chain ID: 0 when any is not unpacked."""
    if not chains or any(ch not in usage for ch in chains):
        return 0
    return sum(usage[ch] for ch in chains)


def index_entries(image: Image, digest: str) -> list[JSON]:
    """An index's ``manifests`` entries as written. An image read back from the index (a
    sync) keeps none: its target's manifests, flattened, stand in (a platform taken from
    the config then reads as the entry's, and nested indexes are not told apart)."""
    if digest in image.index_entries:
        return image.index_entries[digest]
    if image.index_entries or not image.indexes or image.indexes[0].digest != digest:
        return []
    out = []
    for m in image.manifests:
        entry: JSON = {"mediaType": m.media_type, "digest": m.digest, "size": m.size}
        if m.annotations:
            entry["annotations"] = dict(m.annotations)
        if m.platform is not None:
            entry["platform"] = m.platform.as_dict()
        out.append(entry)
    return out


def walk(image: Image, descriptor: Descriptor) -> Iterator[tuple[JSON, Manifest | None]]:
    """``walkReachableImageManifests``: every manifest descriptor reachable from the target
    (nested indexes followed, as listed, missing ones included), with what was read of it."""
    by_digest = {m.digest: m for m in image.manifests}

    def entries(digest: str, depth: int) -> Iterator[tuple[JSON, Manifest | None]]:
        for entry in index_entries(image, digest) if depth < 8 else []:
            media = entry.get("mediaType")
            child = _str(entry.get("digest"))
            if media in c.MANIFESTS:
                yield descriptor_json(entry), by_digest.get(child)
            elif media in c.INDEXES:
                yield from entries(child, depth + 1)

    if descriptor.media_type in c.MANIFESTS:
        yield descriptor_json(descriptor), by_digest.get(descriptor.digest)
    elif descriptor.media_type in c.INDEXES:
        yield from entries(descriptor.digest, 0)


def _broken(m: Manifest) -> bool:
    """Present but not a manifest that decodes (``Check`` fails: the engine skips it)."""
    return m.available and m.config is None


def view(desc: JSON, m: Manifest | None, usage: Mapping[str, int],
         containers: Mapping[str, list[str]]) -> View | None:
    """One manifest's ``ManifestSummary`` facts; ``None`` when the engine leaves it out."""
    if m is not None and _broken(m):
        return None
    present = m is not None and m.available
    v = View(desc, m if present else None)
    if m is not None and present:
        v.available = m.config is not None and m.config_present \
            and all(layer.present for layer in m.layers)
        v.blobs = [(m.digest, m.size)]
        if m.config is not None and m.config_present:
            v.blobs.append((m.config.digest, m.config.size))
        v.blobs += [(layer.digest, layer.size) for layer in m.layers if layer.present]
        v.content = sum(size for _, size in v.blobs)
    notes = desc.get("annotations") or {}
    plat = desc.get("platform")
    pseudo = REFERENCE_TYPE in notes or (isinstance(plat, dict) and \
        plat.get("os") == "unknown" and plat.get("architecture") == "unknown")
    if not pseudo and present and m is not None and m.layers:
        pseudo = not any(is_layer_type(layer.media_type) for layer in m.layers)
    if pseudo:
        ref = notes.get(REFERENCE_DIGEST, "")
        if REFERENCE_TYPE in notes and ref:
            if not is_digest(ref):
                return v
            v.kind, v.attestation_for = "attestation", ref
        return v
    v.kind = "image"
    v.platform = platform_json(plat) if isinstance(plat, dict) else \
        {"architecture": "", "os": ""}
    v.config = go_config(m.config_raw if present and m is not None else None)
    if v.config["os"] and not isinstance(plat, dict):
        v.platform = platform_of_config(v.config)
    diff_ids = v.config["rootfs"]["diff_ids"]
    if diff_ids is not None:
        v.chains = chain_ids(diff_ids)
        v.unpacked = total_usage(v.chains, usage)
    v.containers = containers.get(desc["digest"], [])
    return v


@dataclass
class Summary:
    """``multiPlatformSummary`` of one image (from one of its records' target)."""

    views: list[View]
    best: View | None
    total: int
    chains: list[str]
    blobs: list[tuple[str, int]]
    containers: int


def summarize(image: Image, target: Descriptor, usage: Mapping[str, int],
              containers: Mapping[str, list[str]], matcher: Matcher) -> Summary:
    views: list[View] = []
    best: View | None = None
    chains: list[str] = []
    for desc, m in walk(image, target):
        v = view(desc, m, usage, containers)
        if v is None:
            continue
        views.append(v)
        if v.kind != "image":
            continue
        chains += v.chains or []
        assert v.platform is not None
        if best is None or matcher.less(v.platform, best.platform or {}):
            best = v
    return Summary(views, best, sum(v.content + v.unpacked for v in views), chains,
                   [b for v in views for b in v.blobs],
                   sum(len(v.containers) for v in views))


def best_present(image: Image, target: Descriptor, matcher: Matcher) -> Manifest | None:
    """image.go ``getBestPresentImageManifest``: among the manifests present (the target
    itself when it is one), the host's preferred platform."""
    best: tuple[Manifest, JSON] | None = None
    for desc, m in walk(image, target):
        if m is None or (not m.available and target.media_type in c.INDEXES):
            continue
        plat = desc.get("platform")
        p = platform_json(plat) if isinstance(plat, dict) else \
            platform_of_config(go_config(m.config_raw))
        if best is None or matcher.less(p, best[1]):
            best = (m, p)
    return best[0] if best else None


__all__ = ["IMAGE_CONFIG", "Matcher", "Summary", "View", "best_present", "descriptor_json",
           "encode_config", "go_config", "index_entries", "is_layer_type", "platform_json",
           "summarize", "total_usage", "usage_of", "walk"]
