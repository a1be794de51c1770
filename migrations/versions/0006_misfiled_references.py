"""References docker lists but cannot find by name: ``tags.misfiled``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

moby's reference store (reference/store.go) lists an image's references from every entry of
``repositories.json`` that parses (``reload`` fills ``referencesByIDCache`` from them all), but
finds a name only under its own repository key, in its familiar form (``Get``). An entry filed
under another repository (``"wrongrepo": {"other:1": ID}``) is listed by ``docker images`` as
``other 1`` and found by no name. Such an entry is now a row with ``misfiled`` set; a name never
resolves to it.

The upgrade forgets the signature of ``repositories.json``, so the next sync reads it again and
adds the references it used to leave out. The downgrade drops those rows and the column: what
is left is what revision 0005's code makes of the same file.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REPOSITORIES = "repositories.json"  # the bucket of its signature


# A plain ALTER TABLE on both databases: a batch copy of ``tags`` would have SQLite rename
# a table the views read.


def upgrade() -> None:
    op.add_column("tags", sa.Column("misfiled", sa.Boolean(), nullable=False,
                                    server_default=sa.false()))
    buckets = sa.table("entry_buckets", sa.column("prefix", sa.Text()))
    op.execute(sa.delete(buckets).where(buckets.c.prefix == REPOSITORIES))


def downgrade() -> None:
    tags = sa.table("tags", sa.column("misfiled", sa.Boolean()))
    op.execute(sa.delete(tags).where(tags.c.misfiled))
    op.drop_column("tags", "misfiled")
