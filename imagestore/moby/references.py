"""Docker's reference store (``repositories.json``): which names point at which image.

Names are kept as Docker writes them ("familiar": ``web``, ``registry.example.com/team/api``);
a name given without a tag means ``:latest``, as on docker's command line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from imagestore.moby.digest import is_image_id


@dataclass(frozen=True)
class Reference:
    """One entry of ``repositories.json``. ``misfiled``: one moby's reference store lists
    among the image's references (``docker images`` shows it) but finds by no name: filed
    under another repository, or not in familiar form; ``ref`` is then the form docker shows."""

    ref: str
    repository: str
    tag: str | None
    digest: str | None
    image_id: str
    misfiled: bool = False


class BadReferences(ValueError):
    """``repositories.json`` that cannot be read at all."""


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` into its parts; the tag separator is the last ``:`` after ``/``."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


# -- docker's reference grammar -------------------------------------------------------------
# Ported from github.com/distribution/reference v0.6.0 (regexp.go, reference.go, normalize.go,
# helpers.go), the package moby and docker/cli use, with digest.Parse from
# github.com/opencontainers/go-digest v1.0.0 (the version moby vendors). Go's ``\w`` and
# ``[[:xdigit:]]`` are ASCII-only, hence ``re.ASCII``; Go's leftmost-first submatches are what
# Python's ``re`` gives for these patterns.

def _optional(*res: str) -> str:
    return "(?:" + "".join(res) + ")?"


def _any_times(*res: str) -> str:
    return "(?:" + "".join(res) + ")*"


def _capture(*res: str) -> str:
    return "(" + "".join(res) + ")"


_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + ")*"
_HOST = "(?:" + _DOMAIN_NAME + "|" + _IPV6_ADDRESS + ")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + _any_times(_SEPARATOR + _ALPHANUMERIC)
_REMOTE_NAME = _PATH_COMPONENT + _any_times("/" + _PATH_COMPONENT)
_NAME = _optional(_DOMAIN_AND_PORT + "/") + _REMOTE_NAME

# Used with ``fullmatch``, which is Go's ``anchored(...)``.
_REFERENCE_RE = re.compile(
    _capture(_NAME) + _optional(":", _capture(_TAG)) + _optional("@", _capture(_DIGEST)),
    re.ASCII)
_NAME_RE = re.compile(_optional(_capture(_DOMAIN_AND_PORT), "/") + _capture(_REMOTE_NAME),
                      re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# go-digest v1.0.0: the registered algorithms and the length of their lower-case hex.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")

REPOSITORY_NAME_TOTAL_LENGTH_MAX = 255
_DEFAULT_DOMAIN = "docker.io"
_LEGACY_DEFAULT_DOMAIN = "index.docker.io"
_OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
_LOCALHOST = "localhost"


class InvalidReference(ValueError):
    """A string docker's reference parser refuses; the message is docker's."""


@dataclass(frozen=True)
class NamedReference:
    """A parsed, normalised reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    def familiar_name(self) -> str:
        """``FamiliarName``: ``docker.io/`` and a lone ``library/`` left off."""
        domain, path = self.domain, self.path
        if domain == _DEFAULT_DOMAIN:
            domain = ""
            if path.startswith(_OFFICIAL_REPO_PREFIX):
                rest = path[len(_OFFICIAL_REPO_PREFIX):]
                if "/" not in rest:
                    path = rest
        return f"{domain}/{path}" if domain else path

    def familiar_string(self) -> str:
        """``FamiliarString``: the form docker shows, and keys ``repositories.json`` with."""
        out = self.familiar_name()
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        """``String()``: the full name, the order moby's reference store sorts them in."""
        return (f"{self.domain}/{self.path}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def tags_and_digests(refs: list[str]) -> tuple[list[str], list[str]]:
    """An image's references split into tags and digests, each in the reference store's
    order (moby reference/store.go ``References``: sorted by ``String()``)."""
    tags: list[tuple[str, str]] = []
    digests: list[tuple[str, str]] = []
    for ref in refs:
        _, tag, digest = split_reference(ref)
        if tag is not None:
            tags.append((full_name(ref), ref))
        elif digest is not None:
            digests.append((full_name(ref), ref))
    return [r for _, r in sorted(tags)], [r for _, r in sorted(digests)]


def full_name(name: str) -> str:
    """A familiar name as the reference store sorts it (``web:1.0`` ->
    ``docker.io/library/web:1.0``); a name that does not parse stays as it is."""
    try:
        return str(parse_normalized_named(name))
    except InvalidReference:
        return name


def _validate_digest(text: str) -> None:
    """go-digest's ``Digest.Validate``, with its default algorithms."""
    alg, sep, encoded = text.partition(":")
    if not sep or not encoded:
        raise InvalidReference("invalid checksum digest format")
    size = _DIGEST_HEX_LENGTHS.get(alg)
    if size is None:
        if not re.fullmatch(_DIGEST, text, re.ASCII):
            raise InvalidReference("invalid checksum digest format")
        raise InvalidReference("unsupported digest algorithm")
    if len(encoded) != size or not _HEX_RE.fullmatch(encoded):
        raise InvalidReference("invalid checksum digest length"
                               if len(encoded) != size else "invalid checksum digest format")


def _parse(s: str) -> NamedReference:
    """``reference.Parse``."""
    if not s:
        raise InvalidReference("repository name must have at least one component")
    m = _REFERENCE_RE.fullmatch(s)
    if m is None:
        if s.lower() != s and _REFERENCE_RE.fullmatch(s.lower()) is not None:
            raise InvalidReference("repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    nm = _NAME_RE.fullmatch(name)
    domain, path = (nm.group(1) or "", nm.group(2)) if nm is not None else ("", name)
    if len(path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"repository name must not be more than {REPOSITORY_NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        _validate_digest(digest)
    return NamedReference(domain, path, tag or None, digest or None)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """``splitDockerDomain``: the domain (``docker.io`` when none) and the rest."""
    maybe_domain, slash, maybe_remote = name.partition("/")
    if not slash:
        return _DEFAULT_DOMAIN, _OFFICIAL_REPO_PREFIX + name
    if maybe_domain == _LOCALHOST:
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == _LEGACY_DEFAULT_DOMAIN:
        domain, remote = _DEFAULT_DOMAIN, maybe_remote
    elif "." in maybe_domain or ":" in maybe_domain or maybe_domain.lower() != maybe_domain:
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = _DEFAULT_DOMAIN, name
    if domain == _DEFAULT_DOMAIN and "/" not in remote:
        remote = _OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def parse_normalized_named(s: str) -> NamedReference:
    """``reference.ParseNormalizedNamed``: a familiar or full name, with its tag and digest
    as given; ``InvalidReference`` with docker's message for what docker refuses."""
    if _IDENTIFIER_RE.fullmatch(s):
        raise InvalidReference(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(s)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise InvalidReference(
            f"invalid reference format: repository name ({remote}) must be lowercase")
    return _parse(domain + "/" + remainder)


def parse_docker_ref(s: str) -> NamedReference:
    """``reference.ParseDockerRef``: as ``parse_normalized_named``, then a tag and a digest
    keep only the digest (moby's reference store does the same: ``favorDigest`` and
    ``store.Get``), and a bare name gets ``:latest`` (``TagNameOnly``)."""
    ref = parse_normalized_named(s)
    if ref.digest:
        return NamedReference(ref.domain, ref.path, None, ref.digest)
    if ref.tag is None:
        return NamedReference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def normalize_reference(text: str) -> str:
    """What a user typed into the key ``repositories.json`` uses, as moby's reference store
    looks it up: ``bb`` → ``bb:latest``, ``docker.io/library/bb:1.35`` → ``bb:1.35``,
    ``bb:1.35@sha256:…`` → ``bb@sha256:…``. What docker refuses as a name (``FOO``, a bare
    64-hex ID, …) comes back unchanged; it then matches no key ``parse_repositories`` keeps,
    since every key kept is its own normal form."""
    try:
        return parse_docker_ref(text).familiar_string()
    except InvalidReference:
        return text


def _check_repository(repo: str) -> str | None:
    """Why ``repo`` is not a repository name as docker writes it, or ``None``."""
    try:
        named = parse_normalized_named(repo)
    except InvalidReference as exc:
        return str(exc)
    if named.tag is not None or named.digest is not None:
        return "not a repository name (has a tag or digest)"
    if named.familiar_name() != repo:
        return f"not in docker's familiar form (docker writes {named.familiar_name()!r})"
    if repo == "sha256":
        return "ambiguous: the name of a digest algorithm (docker refuses it)"
    return None


def _check_key(ref: str, repo: str) -> tuple[NamedReference | None, str]:
    """The parsed key, or why it is not a key docker would write under ``repo``."""
    try:
        named = parse_normalized_named(ref)
    except InvalidReference as exc:
        return None, str(exc)
    if named.tag is None and named.digest is None:
        return None, "has neither a tag nor a digest (docker always writes one)"
    if named.tag is not None and named.digest is not None:
        return None, "has both a tag and a digest (docker stores only the digest)"
    if named.familiar_string() != ref:
        return None, f"not in docker's familiar form (docker writes {named.familiar_string()!r})"
    if named.familiar_name() != repo:
        return None, f"filed under repository {repo!r}, but names {named.familiar_name()!r}"
    return named, ""


def _listed(ref: str) -> NamedReference | None:
    """A key docker would not have written that moby's reference store lists all the same
    (``reload`` keeps every key that ``ParseNormalizedNamed`` takes, whatever repository it
    is filed under), as ``docker images`` shows it: a tag or a digest, not both."""
    try:
        named = parse_normalized_named(ref)
    except InvalidReference:
        return None
    return named if (named.tag is None) != (named.digest is None) else None


def parse_repositories(raw: bytes) -> tuple[list[Reference], list[str]]:
    """All well-formed references, and one problem line for each entry that is not: a
    repository or reference docker's grammar refuses, not written as docker writes it
    (familiar form, filed under its own repository), or not naming an image ID.

    An entry not written as docker writes it but listed by docker all the same (``"wrong":
    {"other:1": ID}`` is ``other 1`` in ``docker images``) is kept too, ``misfiled``, unless a
    well-filed entry has its name already: docker finds it by no name."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadReferences(f"not valid JSON: {exc}") from None
    repos = doc.get("Repositories") if isinstance(doc, dict) else None
    if not isinstance(repos, dict):
        raise BadReferences('no "Repositories" object')
    refs: list[Reference] = []
    misfiled: list[Reference] = []
    problems: list[str] = []
    for repo, entries in repos.items():
        if not isinstance(entries, dict):
            problems.append(f"repository {repo!r}: not an object")
            continue
        bad_repo = _check_repository(repo)
        if bad_repo is not None:  # one problem for the repository, not one per entry
            problems.append(f"repository {repo[:300]!r}: invalid repository name: "
                            f"{bad_repo[:300]}; {len(entries)} reference(s) in it found by no "
                            f"name")
        for ref, image_id in entries.items():
            named, why = (None, "") if bad_repo is not None else _check_key(ref, repo)
            valid_id = isinstance(image_id, str) and is_image_id(image_id)
            if named is None:
                shown = _listed(ref) if valid_id else None
                listed = "" if shown is None else \
                    f"; listed as {shown.familiar_string()!r}, as docker lists it"
                if bad_repo is None:
                    problems.append(f"reference {ref[:300]!r}: invalid reference: {why[:300]}"
                                    f"{listed[:400]}")
                if shown is not None:
                    misfiled.append(Reference(shown.familiar_string(), shown.familiar_name(),
                                              shown.tag, shown.digest, image_id, True))
                continue
            if not valid_id:
                problems.append(f"reference {ref!r}: not an image ID: {str(image_id)[:80]!r}")
                continue
            refs.append(Reference(ref, repo, named.tag, named.digest, image_id))
    known = {r.ref for r in refs}
    for r in misfiled:  # one row per name: the well-filed entry's, else the first listed
        if r.ref not in known:
            known.add(r.ref)
            refs.append(r)
    return refs, problems


def without_image(raw: bytes, image_id: str) -> tuple[bytes, list[str]]:
    """``repositories.json`` with every reference to ``image_id`` taken out (a repository left
    empty goes too), and the references removed; ``BadReferences`` when it cannot be read."""
    doc, repos = _repositories(raw)
    removed = sorted(ref for entries in repos.values() for ref, target in entries.items()
                     if target == image_id)
    for name in list(repos):
        repos[name] = {r: i for r, i in repos[name].items() if i != image_id}
        if not repos[name]:
            del repos[name]
    return _dump(doc), removed


def _repositories(raw: bytes | None) -> tuple[dict[str, object], dict[str, dict[str, str]]]:
    """The document and its ``Repositories`` map (both new for an absent file)."""
    if raw is None:
        repos: dict[str, dict[str, str]] = {}
        return {"Repositories": repos}, repos
    try:
        doc = json.loads(raw)
        repos = doc["Repositories"]
        if not isinstance(repos, dict) or not all(isinstance(v, dict) for v in repos.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise BadReferences("not a readable reference store") from None
    return doc, repos


def _dump(doc: dict[str, object]) -> bytes:
    """As Go's ``json.Marshal`` writes the store: compact, map keys sorted."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def without_reference(raw: bytes | None, ref: str) -> bytes | None:
    """``repositories.json`` without the reference keyed ``ref`` (moby reference/store.go
    ``Delete``: from its own repository, which goes too when left empty); ``None`` when
    there is no such reference."""
    if raw is None:
        return None
    doc, repos = _repositories(raw)
    name = split_reference(ref)[0]
    entries = repos.get(name)
    if not isinstance(entries, dict) or ref not in entries:
        return None
    del entries[ref]
    if not entries:
        del repos[name]
    return _dump(doc)


def with_tag(raw: bytes | None, ref: NamedReference, image_id: str) -> bytes | None:
    """``repositories.json`` with the tag ``ref`` naming ``image_id``, replacing whatever it
    named (moby reference/store.go ``AddTag`` with force, as the daemon's ``TagImage``
    calls it); ``None`` when it names that image already."""
    if ref.digest is not None:
        raise InvalidReference("refusing to create a tag with a digest reference")
    if ref.familiar_name() == "sha256":
        raise InvalidReference("refusing to create an ambiguous tag using digest algorithm "
                               "as name")
    doc, repos = _repositories(raw)
    key = ref.familiar_string() if ref.tag else f"{ref.familiar_string()}:{DEFAULT_TAG}"
    entries = repos.setdefault(ref.familiar_name(), {})
    if entries.get(key) == image_id:
        return None
    entries[key] = image_id
    return _dump(doc)
