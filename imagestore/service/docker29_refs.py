"""Names and lookups of Docker 29's containerd image service: distribution/reference's
``ParseNamed``, ``ParseAnyReference``, ``FamiliarString`` and ``WithDigest`` over the names
containerd stores (``docker.io/library/app:1``), and moby daemon/containerd/image.go
``resolveImage`` (an image by ID, short ID, ``repo:tag`` or ``repo@digest``), with the
engine's error messages (daemon/images/image.go ``ErrImageDoesNotExist``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from imagestore.containerd.images import Image, is_dangling
from imagestore.containerd.meta import ImageRecord
from imagestore.errors import ImageNotFound, ImageStoreError
from imagestore.moby.references import (
    DEFAULT_TAG,
    InvalidReference,
    NamedReference,
    parse_normalized_named,
)

_ANCHORED_ID = re.compile(r"[a-f0-9]{64}")
_TRUNCATED_ID = re.compile(r"(?:sha256:)?([a-f0-9]{4,64})")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_HEX_RE = re.compile(r"[a-f0-9]+")


class InvalidParameter(ImageStoreError, ValueError):
    """A request the engine refuses as invalid (HTTP 400)."""


class NoSuchImage(ImageNotFound):
    """The engine's 404 for a reference no image answers to."""


def parse_normalized(name: str) -> NamedReference | None:
    """``reference.ParseNormalizedNamed``, ``None`` where it fails."""
    try:
        return parse_normalized_named(name)
    except InvalidReference:
        return None


def parse_named(name: str) -> NamedReference | None:
    """``reference.ParseNamed``: only a name already in canonical form (``None`` else)."""
    ref = parse_normalized(name)
    return ref if ref is not None and str(ref) == name else None


def tag_name_only(ref: NamedReference) -> NamedReference:
    """``reference.TagNameOnly``: a bare name gets ``:latest``."""
    if ref.tag is None and ref.digest is None:
        return NamedReference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def full_name(ref: NamedReference) -> str:
    """``Named.Name()``: domain and path, no tag or digest."""
    return f"{ref.domain}/{ref.path}"


def with_digest(ref: NamedReference, digest: str) -> str:
    """``FamiliarString(WithDigest(TrimNamed(ref), digest))``: ``repo@digest``."""
    return NamedReference(ref.domain, ref.path, None, digest).familiar_string()


def is_digest(text: str) -> bool:
    """go-digest's ``Parse`` succeeds (the registered algorithms, lowercase hex)."""
    algorithm, sep, encoded = text.partition(":")
    return bool(sep) and _DIGEST_HEX.get(algorithm) == len(encoded) \
        and _DIGEST_HEX_RE.fullmatch(encoded) is not None


def record_tags(records: Iterable[ImageRecord]) -> list[str]:
    """history.go ``getImageTags``: the familiar names of the records, dangling ones and
    names that are not canonical left out."""
    out = []
    for record in records:
        if is_dangling(record):
            continue
        ref = parse_named(record.name)
        if ref is not None:
            out.append(ref.familiar_string())
    return out


def familiar_name(record: ImageRecord) -> str:
    """image.go ``imageFamiliarName``: the digest of a dangling record, else its familiar
    name (the name itself when it is not canonical)."""
    if is_dangling(record):
        return record.target.digest
    ref = parse_named(record.name)
    return ref.familiar_string() if ref is not None else record.name


def _not_found(shown: str) -> NoSuchImage:
    return NoSuchImage(f"No such image: {shown}")


class Lookup:
    """The records of a namespace in containerd's listing order (by name, bytewise), for
    ``resolveImage``."""

    def __init__(self, images: Iterable[Image]) -> None:
        self.pairs = [(r, image) for image in images for r in image.records]
        self.pairs.sort(key=lambda p: p[0].name.encode("utf-8", "surrogateescape"))
        self.by_name = {r.name: (image, r) for r, image in self.pairs}

    def with_target(self, digest: str) -> list[tuple[ImageRecord, Image]]:
        return [p for p in self.pairs if p[0].target.digest == digest]

    def resolve(self, ref: str) -> tuple[Image, ImageRecord]:
        """image.go ``resolveImage``: the record ``ref`` names and its image. Raises
        ``NoSuchImage`` (``No such image: …``, or ``ambiguous reference``) and
        ``InvalidParameter`` (a reference that does not parse) as the engine words them."""
        named: NamedReference | None = None
        if _ANCHORED_ID.fullmatch(ref):  # ParseAnyReference: a bare 64-hex ID is a digest
            digest: str | None = "sha256:" + ref
        elif is_digest(ref):
            digest = ref
        else:
            try:
                named = parse_normalized_named(ref)
            except InvalidReference as exc:
                raise InvalidParameter(str(exc)) from None
            digest = named.digest
        if digest is not None:
            shown = named.familiar_string() if named is not None else digest
            hits = self.with_target(digest)
            if not hits:
                raise _not_found(shown)
            if named is None:
                return hits[0][1], hits[0][0]
            for record, image in hits:
                other = parse_normalized(record.name)
                if other is not None and full_name(other) == full_name(named):
                    return image, record
            raise _not_found(shown)
        assert named is not None
        wanted = str(tag_name_only(named))
        if wanted in self.by_name:
            return self.by_name[wanted]
        m = _TRUNCATED_ID.fullmatch(ref)
        if m is None:
            raise _not_found(tag_name_only(named).familiar_string())
        prefix = "sha256:" + m.group(1)
        hits = [p for p in self.pairs if p[0].name == wanted
                or (p[0].target.digest.startswith(prefix) and len(p[0].target.digest) == 71)]
        if not hits:
            raise _not_found(tag_name_only(named).familiar_string())
        if len(hits) > 1:
            for record, image in hits:
                if record.name == wanted:
                    return image, record
            if len({r.target.digest for r, _ in hits}) > 1:
                raise NoSuchImage("ambiguous reference")
        return hits[0][1], hits[0][0]


def resolve(ref: str, images: Iterable[Image]) -> tuple[Image, ImageRecord]:
    """``Lookup(images).resolve(ref)``."""
    return Lookup(images).resolve(ref)


__all__ = ["InvalidParameter", "Lookup", "NoSuchImage", "familiar_name", "full_name",
           "is_digest", "parse_named", "parse_normalized", "record_tags", "resolve",
           "tag_name_only", "with_digest"]
