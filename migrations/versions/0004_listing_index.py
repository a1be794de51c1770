"""A covering index for listings: ``ls`` and the image_list view walk every image's ID,
creation time and chain without reading the table's wide rows (each holds a config).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_images_listing", "images", ["id", "created", "chain_id"])


def downgrade() -> None:
    op.drop_index("ix_images_listing", table_name="images")
