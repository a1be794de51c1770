"""Entry buckets: one digest per group of entry signatures, so a warm open compares a few
thousand digests instead of loading every signature.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

An index upgraded from 0002 gets every bucket that holds a signature marked unknown: its
first sync compares those signatures one by one (re-reading no image that did not change) and
sums them. A bucket with no row reads as empty, so none may be left out. Layer folders are
now signed by their inode from the listing (no stat), so that first sync reads each layer
folder once more.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# Entry kinds as this revision knows them: a bucket is a kind and the first 3 characters
# of the entry's name; the digest -1 means "unknown, compare entry by entry".
KINDS = ("imagedb/content/sha256/", "imagedb/metadata/sha256/", "layerdb/sha256/",
         "layerdb/mounts/", "repositories.json")


def upgrade() -> None:
    op.create_table(
        "entry_buckets",
        sa.Column("prefix", PATH, nullable=False),
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_entry_buckets")),
    )
    for kind in KINDS:
        # A folder kind is the range of paths under it; repositories.json is one path.
        upper = kind[:-1] + "0" if kind.endswith("/") else kind + "0"
        op.execute(sa.text(
            "INSERT INTO entry_buckets (prefix, digest, entries) "
            "SELECT DISTINCT substr(path, 1, :width), -1, 0 FROM entries "
            "WHERE path >= :kind AND path < :upper"
        ).bindparams(width=len(kind) + 3, kind=kind, upper=upper))


def downgrade() -> None:
    op.drop_table("entry_buckets")
    # Revision 0003 code also trusts a folder's own signature (settings 'folder-signature:*')
    # to skip listing it; older code would never refresh one.
    op.execute(sa.text("DELETE FROM settings WHERE key LIKE 'folder-signature:%'"))
