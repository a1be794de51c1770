"""The shapes rows travel in between the sync and the index: plain tuples (the cheapest
thing to pickle back from a worker and to bind), in the column order named here, with the
accessors their readers use instead of bare positions."""

from __future__ import annotations

from typing import Any

# An image row: what ``read_image`` gives and ``Writer.insert_images`` stores.
IMAGE_COLUMNS = ("id", "created", "os", "architecture", "variant", "author", "comment",
                 "docker_version", "chain_id", "layer_count", "config_size", "raw",
                 "last_updated", "built_locally")
ImageRow = tuple[Any, ...]
_ID = IMAGE_COLUMNS.index("id")
_CHAIN = IMAGE_COLUMNS.index("chain_id")

LAYER_COLUMNS = ("chain_id", "diff_id", "parent_id", "diff_size", "size", "cache_id", "depth")
EDGE_COLUMNS = ("child_id", "parent_id")
MOUNT_COLUMNS = ("name", "mount_id", "init_id", "parent_id")
TAG_COLUMNS = ("ref", "repository", "tag", "digest", "image_id", "misfiled")
# A reference: (ref, repository, tag, digest, image ID, misfiled).
TagEntry = tuple[str, str, str | None, str | None, str, bool]
PROBLEM_COLUMNS = ("path", "kind", "reason", "found_at")


def image_row(image_id: str, *, created: str | None, os: str, architecture: str,
              variant: str, author: str, comment: str, docker_version: str,
              chain_id: str | None, layer_count: int, raw: bytes, last_updated: str | None,
              built_locally: bool) -> ImageRow:
    return (image_id, created, os, architecture, variant, author, comment, docker_version,
            chain_id, layer_count, len(raw), raw, last_updated, built_locally)


def row_id(row: ImageRow) -> str:
    return str(row[_ID])


def row_chain(row: ImageRow) -> str | None:
    chain = row[_CHAIN]
    return None if chain is None else str(chain)
