"""Entry buckets: the signatures a sync compares, grouped by bucket with one digest each, so
a warm open compares a few thousand digests instead of loading every signature.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

The ``entries`` table (one row per entry) becomes ``entry_buckets``: a bucket is an entry
kind and the first 3 characters of the name; ``signatures`` is a JSON object of name ->
signature, ``digest`` their sum (-1: unknown, compare entry by entry). Upgraded buckets are
marked unknown, so the first sync compares their signatures one by one, re-reading no image
that did not change. Layer folders are now signed by the inode their listing gives (no
stat), so that first sync reads each layer folder once more.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
# Entry kinds as this revision knows them (paths in the index start with one).
KINDS = ("imagedb/content/sha256/", "imagedb/metadata/sha256/", "layerdb/sha256/",
         "layerdb/mounts/", "repositories.json")
BUCKET = 3
UNKNOWN = -1

entries = sa.table("entries", sa.column("path", sa.Text()), sa.column("signature", sa.BigInteger()))
buckets = sa.table("entry_buckets", sa.column("prefix", sa.Text()),
                   sa.column("digest", sa.BigInteger()), sa.column("entries", sa.Integer()),
                   sa.column("signatures", sa.Text()))


def _kind(path: str) -> str | None:
    return next((k for k in KINDS if path.startswith(k)), None)


def upgrade() -> None:
    op.create_table(
        "entry_buckets",
        sa.Column("prefix", PATH, nullable=False),
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("signatures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_entry_buckets")),
    )
    grouped: dict[str, dict[str, int]] = {}
    for path, sig in op.get_bind().execute(sa.select(entries.c.path, entries.c.signature)):
        kind = _kind(path)
        if kind is not None:
            name = path[len(kind):]
            grouped.setdefault(kind + name[:BUCKET], {})[name] = sig
    rows: list[dict[str, Any]] = [
        {"prefix": prefix, "digest": UNKNOWN, "entries": len(sigs),
         "signatures": json.dumps(sigs, separators=(",", ":"), sort_keys=True)}
        for prefix, sigs in sorted(grouped.items())]
    if rows:
        op.bulk_insert(buckets, rows)
    op.drop_table("entries")


def downgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("path", PATH, nullable=False),
        sa.Column("signature", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_entries")),
    )
    rows: list[dict[str, Any]] = []
    for prefix, text in op.get_bind().execute(sa.select(buckets.c.prefix, buckets.c.signatures)):
        kind = _kind(prefix)
        if kind is not None:
            rows.extend({"path": kind + name, "signature": sig}
                        for name, sig in json.loads(text).items())
    if rows:
        op.bulk_insert(entries, rows)
    op.drop_table("entry_buckets")
    # This revision's code also trusts a folder's own signature (settings
    # 'folder-signature:*') to skip listing it; older code would never refresh one.
    op.execute(sa.text("DELETE FROM settings WHERE key LIKE 'folder-signature:%'"))
