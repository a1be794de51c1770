"""Reporting views: the stable SQL surface for sqlite3, sqlite-utils and Datasette users.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The one dialect difference in these views: joining strings of a group.
_JOIN = {"sqlite": "group_concat({expr}, ', ')", "postgresql": "string_agg({expr}, ', ')"}


def _views(join: str) -> dict[str, str]:
    tags = join.format(expr="ref")
    ids = join.format(expr="il.image_id")
    return {
        # One row per image, with what `docker images` and `docker image inspect` show.
        "image_list": f"""
            SELECT i.id,
                   substr(i.id, 8, 12) AS short_id,
                   (SELECT {tags} FROM (SELECT t.ref FROM tags t WHERE t.image_id = i.id
                                        ORDER BY t.ref) AS r) AS tags,
                   i.created,
                   i.os,
                   i.architecture,
                   COALESCE(l.size, 0) AS size,
                   i.layer_count,
                   p.parent_id AS parent,
                   NOT EXISTS (SELECT 1 FROM image_parents c WHERE c.parent_id = i.id) AS is_head,
                   (NOT EXISTS (SELECT 1 FROM image_parents c WHERE c.parent_id = i.id)
                    AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.image_id = i.id)) AS is_dangling,
                   i.last_updated,
                   i.built_locally,
                   i.chain_id
            FROM images i
            LEFT JOIN image_parents p ON p.child_id = i.id
            LEFT JOIN layers l ON l.chain_id = i.chain_id""",
        # Every layer of every image (its whole chain), position 1 = the bottom layer.
        "image_layers": """
            WITH RECURSIVE chain(image_id, chain_id, position) AS (
                SELECT id, chain_id, layer_count FROM images WHERE chain_id IS NOT NULL
                UNION ALL
                SELECT c.image_id, l.parent_id, c.position - 1
                FROM chain c JOIN layers l ON l.chain_id = c.chain_id
                WHERE l.parent_id IS NOT NULL
            )
            SELECT image_id, chain_id, position FROM chain""",
        # Which images share each layer, and the bytes that sharing saves.
        "layer_usage": f"""
            SELECT l.chain_id,
                   l.diff_id,
                   l.diff_size,
                   l.size AS chain_size,
                   COUNT(il.image_id) AS images,
                   CASE WHEN COUNT(il.image_id) > 1
                        THEN l.diff_size * (COUNT(il.image_id) - 1) ELSE 0 END AS shared_bytes,
                   (SELECT COUNT(*) FROM mounts m WHERE m.parent_id = l.chain_id) AS containers,
                   {ids} AS image_ids
            FROM layers l
            LEFT JOIN image_layers il ON il.chain_id = l.chain_id
            GROUP BY l.chain_id, l.diff_id, l.diff_size, l.size""",
        # What the last syncs skipped, and why.
        "sync_problems": """
            SELECT path, kind, reason, found_at FROM problems""",
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, body in _views(_JOIN.get(dialect, _JOIN["postgresql"])).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in ("sync_problems", "layer_usage", "image_layers", "image_list"):
        op.execute(f"DROP VIEW IF EXISTS {name}")
