"""Initial index: images, parent edges, layers, mounts, tags, entry signatures, problems.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Byte-wise comparison for prefix searches and path ranges, on PostgreSQL too.
ID = sa.String(71).with_variant(sa.String(71, collation="C"), "postgresql")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", ID, nullable=False),
        sa.Column("created", sa.Text(), nullable=True),
        sa.Column("os", sa.Text(), nullable=False),
        sa.Column("architecture", sa.Text(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("docker_version", sa.Text(), nullable=False),
        sa.Column("chain_id", ID, nullable=True),
        sa.Column("layer_count", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.Text(), nullable=True),
        sa.Column("built_locally", sa.Boolean(), nullable=False),
        sa.Column("config_size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    op.create_index(op.f("ix_images_chain_id"), "images", ["chain_id"])
    op.create_table(
        "image_parents",
        sa.Column("child_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"], ["images.id"], name=op.f("fk_image_parents_child_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("child_id", name=op.f("pk_image_parents")),
    )
    op.create_index(op.f("ix_image_parents_parent_id"), "image_parents", ["parent_id"])
    op.create_table(
        "layers",
        sa.Column("chain_id", ID, nullable=False),
        sa.Column("diff_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("diff_size", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("cache_id", sa.Text(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_layers")),
    )
    op.create_index(op.f("ix_layers_diff_id"), "layers", ["diff_id"])
    op.create_index(op.f("ix_layers_parent_id"), "layers", ["parent_id"])
    op.create_table(
        "mounts",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("mount_id", sa.Text(), nullable=False),
        sa.Column("init_id", sa.Text(), nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mounts")),
    )
    op.create_index(op.f("ix_mounts_parent_id"), "mounts", ["parent_id"])
    op.create_table(
        "tags",
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("repository", sa.Text(), nullable=False),
        sa.Column("tag", sa.Text(), nullable=True),
        sa.Column("digest", sa.Text(), nullable=True),
        sa.Column("image_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_tags")),
    )
    op.create_index(op.f("ix_tags_image_id"), "tags", ["image_id"])
    op.create_table(
        "entries",
        sa.Column("path", PATH, nullable=False),
        sa.Column("signature", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_entries")),
    )
    op.create_table(
        "problems",
        sa.Column("path", PATH, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("found_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_problems")),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )


def downgrade() -> None:
    for table in ("settings", "problems", "entries", "tags", "mounts", "layers",
                  "image_parents", "images"):
        op.drop_table(table)
