"""Docker's reference store (``repositories.json``): which names point at which image.

Names are kept as Docker writes them ("familiar": ``web``, ``registry.example.com/team/api``);
a name given without a tag means ``:latest``, as on docker's command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from imagestore.moby.digest import is_image_id


@dataclass(frozen=True)
class Reference:
    ref: str
    repository: str
    tag: str | None
    digest: str | None
    image_id: str


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


def normalize_reference(text: str) -> str:
    """What a user typed into the key ``repositories.json`` uses (``web`` → ``web:latest``)."""
    name, tag, digest = split_reference(text)
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if name.startswith(prefix) and name.count("/") >= 1:
            name = name[len(prefix) :]
            break
    if digest:
        return f"{name}@{digest}" if tag is None else f"{name}:{tag}@{digest}"
    return f"{name}:{tag or 'latest'}"


def parse_repositories(raw: bytes) -> tuple[list[Reference], list[str]]:
    """All well-formed references, and one problem line for each entry that is not."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadReferences(f"not valid JSON: {exc}") from None
    repos = doc.get("Repositories") if isinstance(doc, dict) else None
    if not isinstance(repos, dict):
        raise BadReferences('no "Repositories" object')
    refs: list[Reference] = []
    problems: list[str] = []
    for repo, entries in repos.items():
        if not isinstance(entries, dict):
            problems.append(f"repository {repo!r}: not an object")
            continue
        for ref, image_id in entries.items():
            if not isinstance(image_id, str) or not is_image_id(image_id):
                problems.append(f"reference {ref!r}: not an image ID: {str(image_id)[:80]!r}")
                continue
            name, tag, digest = split_reference(ref)
            refs.append(Reference(ref, name, tag, digest, image_id))
    return refs, problems


def without_image(raw: bytes, image_id: str) -> tuple[bytes, list[str]]:
    """``repositories.json`` with every reference to ``image_id`` taken out (a repository left
    empty goes too), and the references removed; ``BadReferences`` when it cannot be read."""
    try:
        doc = json.loads(raw)
        repos = doc["Repositories"]
        removed = sorted(ref for entries in repos.values() for ref, target in entries.items()
                         if target == image_id)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise BadReferences("not a readable reference store") from None
    for name in list(repos):
        repos[name] = {r: i for r, i in repos[name].items() if i != image_id}
        if not repos[name]:
            del repos[name]
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), removed
