"""Every layer's file list, keyed by diff ID, and the ``image_files`` view.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

``layer_files`` holds one row per tar entry of a layer (its list read from
``tar-split.json.gz``), ``layer_file_lists`` one row per diff ID read (how many entries, what
was wrong with it). A list is a content-addressed fact: the rows are keyed by diff ID, not by
store, and shared by every store and image holding the layer. They are read on first need
(``sync --files``, ``files``, ``which``...), so an index that never asks stays as it was;
rows whose diff ID no store holds any more are removed by the next reading of lists (the
view never shows them: it joins through ``layers``).

``image_files`` is each image's merged filesystem, computed from the layer rows: an entry is
shown unless a layer above gives the same path again, or a whiteout above removes it or one
of its folders, or an opaque folder above hides it, or a layer above gives one of its
folders as something else than a folder (a file or a link replacing a folder hides what
lower layers hold below it). Hard links are shown as the tar has them (size 0, the target in
``link``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(71).with_variant(sa.String(71, collation="C"), "postgresql")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# The layers of every image, bottom (1) to top, as the recursive walk of ``image_layers``.
_VIEW = """
    WITH RECURSIVE chain(store_id, image_id, chain_id, position) AS (
        SELECT store_id, id, chain_id, layer_count FROM images WHERE chain_id IS NOT NULL
        UNION ALL
        SELECT c.store_id, c.image_id, l.parent_id, c.position - 1
        FROM chain c JOIN layers l ON l.store_id = c.store_id AND l.chain_id = c.chain_id
        WHERE l.parent_id IS NOT NULL
    ),
    placed AS (
        SELECT c.store_id, c.image_id, c.position, l.diff_id
        FROM chain c JOIN layers l ON l.store_id = c.store_id AND l.chain_id = c.chain_id
    )
    SELECT s.name AS store, p.image_id AS image, f.path, f.type, f.size, f.mode,
           p.diff_id AS layer, f.link, p.position
    FROM placed p
    JOIN stores s ON s.id = p.store_id
    JOIN layer_files f ON f.diff_id = p.diff_id
    WHERE f.whiteout IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM placed u JOIN layer_files g ON g.diff_id = u.diff_id AND g.path = f.path
        WHERE u.store_id = p.store_id AND u.image_id = p.image_id AND u.position > p.position)
      AND NOT EXISTS (
        SELECT 1 FROM placed u JOIN layer_files g ON g.diff_id = u.diff_id
        WHERE u.store_id = p.store_id AND u.image_id = p.image_id AND u.position > p.position
          AND g.whiteout IN ('remove', 'opaque')
          AND ((g.whiteout = 'remove' AND g.target = f.path)
               OR (g.whiteout = 'opaque' AND g.target = '')
               OR (f.path > g.target || '/' AND f.path < g.target || '0')))
      AND NOT EXISTS (
        SELECT 1 FROM placed u JOIN layer_files g ON g.diff_id = u.diff_id
        WHERE u.store_id = p.store_id AND u.image_id = p.image_id AND u.position > p.position
          AND g.whiteout IS NULL AND g.type <> 'dir'
          AND f.path > g.path || '/' AND f.path < g.path || '0')
"""


def upgrade() -> None:
    op.create_table(
        "layer_file_lists",
        sa.Column("diff_id", ID, nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.Column("read_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("diff_id", name="pk_layer_file_lists"))
    op.create_table(
        "layer_files",
        sa.Column("diff_id", ID, nullable=False),
        sa.Column("path", PATH, nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("gid", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.BigInteger(), nullable=False),
        sa.Column("link", PATH, nullable=True),
        sa.Column("crc64", sa.Text(), nullable=True),
        sa.Column("whiteout", sa.Text(), nullable=True),
        sa.Column("target", PATH, nullable=True),
        sa.PrimaryKeyConstraint("diff_id", "path", name="pk_layer_files"))
    # "Which layers hold this path" is one range read, whatever the number of layers.
    op.create_index("ix_layer_files_path", "layer_files", ["path", "diff_id"])
    op.create_index("ix_layer_files_whiteout", "layer_files", ["diff_id", "whiteout"])
    op.execute(f"CREATE VIEW image_files AS {_VIEW}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS image_files")
    op.drop_index("ix_layer_files_whiteout", "layer_files")
    op.drop_index("ix_layer_files_path", "layer_files")
    op.drop_table("layer_files")
    op.drop_table("layer_file_lists")
