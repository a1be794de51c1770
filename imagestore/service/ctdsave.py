"""``docker save`` of a containerd store's images (``imagestore.containerd.save``): the REFs
resolved as docker save takes them (a bare repository name saves every tag of it), the
images as the index holds them, the blobs from the content store, each checked as it
streams."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from imagestore.containerd import save as ctd_save
from imagestore.errors import ImageStoreError
from imagestore.saving import Output, resolve_ref

if TYPE_CHECKING:
    from imagestore.service.ctdreading import ContainerdReading


def save_images(store: ContainerdReading, refs: list[str], out: Output, *,
                format: str = "oci") -> int:
    """Write the images ``refs`` name as one archive ``docker load`` takes (20.10 and 25+);
    returns its length. A path is written aside and renamed into place only whole."""
    if format != "oci":
        raise ImageStoreError(f"--format {format}: a containerd store is saved as Docker 25 "
                              f"and later save (oci), which every docker load reads")
    names: dict[str, list[str]] = {}
    for ref in refs:
        for image_id, tag in resolve_ref(store, ref):
            chosen = names.setdefault(image_id, [])
            if tag is not None and tag not in chosen:
                chosen.append(tag)
    if not names:
        raise ImageStoreError("no image to save: name at least one")
    images, _ = store.inventory()
    by_id = {image.id: image for image in images}
    items = [(by_id[image_id], tags) for image_id, tags in names.items()]
    if isinstance(out, (str, os.PathLike)):
        return ctd_save.save_to_path(store.layout, items, Path(out), platform=store.platform)
    return ctd_save.save(store.layout, items, out, platform=store.platform)


__all__ = ["save_images"]
