"""The names of an image in namespace ``k8s.io`` as the kubelet's CRI shows them (``crictl
images``; containerd internal/cri/store/image): the CRI keeps each image under its tag, its
``repo@digest`` and its config ID (``sha256:<config>``) records, all one image. Docker 29's
own listing would show every record name as a tag (moby image_list.go puts each parsable
name in ``RepoTags``); on a Kubernetes node the CRI's view is the one operators know:
``RepoTags`` the tagged names, ``RepoDigests`` the ``repo@digest`` names, the config ID
only as a way to name the image."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imagestore.containerd.images import is_config_id

NAMESPACE = "k8s.io"  # containerd's CRI plugin keeps its images here

def names(refs: Iterable[str]) -> tuple[list[str], list[str]]:
    """(RepoTags, RepoDigests) of an image from the familiar names of its records."""
    tags: list[str] = []
    digests: list[str] = []
    for ref in refs:
        if is_config_id(ref):
            continue
        (digests if "@" in ref else tags).append(ref)
    return list(dict.fromkeys(tags)), list(dict.fromkeys(digests))


def cri_view(attrs: dict[str, Any]) -> dict[str, Any]:
    """An inspect or list answer with the CRI's names (the rest unchanged)."""
    tags, digests = names([*(attrs.get("RepoTags") or []), *(attrs.get("RepoDigests") or [])])
    return {**attrs, "RepoTags": tags, "RepoDigests": digests}


__all__ = ["NAMESPACE", "cri_view", "is_config_id", "names"]
