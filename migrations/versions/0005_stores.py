"""Several stores in one index: a ``stores`` table, and ``store_id`` leading every key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

An index made before this revision mirrored one root. Its rows become one store: named by
the default rule (``HOST:/real/path``) when the process upgrading knows the root (the
library passes it in), otherwise named ``unnamed`` with no root, which the first store opened
on this index adopts. Every table is rebuilt with its new key (SQLite cannot change a
primary key in place); the views are made again with a ``store`` column.

Downgrade keeps an index that holds one store (or none) and refuses one that holds several:
the old schema has nowhere to put the others.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(71).with_variant(sa.String(71, collation="C"), "postgresql")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
UNNAMED = "unnamed"

OLD_INDEXES = {
    "images": {"ix_images_chain_id": ("chain_id",),
               "ix_images_listing": ("id", "created", "chain_id")},
    "image_parents": {"ix_image_parents_parent_id": ("parent_id",)},
    "layers": {"ix_layers_diff_id": ("diff_id",), "ix_layers_parent_id": ("parent_id",)},
    "mounts": {"ix_mounts_parent_id": ("parent_id",)},
    "tags": {"ix_tags_image_id": ("image_id",)},
}
NEW_INDEXES = {
    "images": {"ix_images_chain": ("store_id", "chain_id"),
               "ix_images_listing": ("store_id", "id", "created", "chain_id")},
    "image_parents": {"ix_image_parents_parent": ("store_id", "parent_id")},
    # Led by the digest: "which stores hold this layer?" is one range read.
    "layers": {"ix_layers_diff": ("diff_id", "store_id"),
               "ix_layers_chain": ("chain_id", "store_id"),
               "ix_layers_parent": ("store_id", "parent_id")},
    "mounts": {"ix_mounts_parent": ("store_id", "parent_id")},
    "tags": {"ix_tags_image": ("store_id", "image_id")},
}
# Each table's key after store_id.
KEYS = {"images": "id", "image_parents": "child_id", "layers": "chain_id", "mounts": "name",
        "tags": "ref", "entry_buckets": "prefix", "problems": "path", "settings": "key"}
# Parents before children when creating, children before parents when dropping.
ORDER = ("images", "image_parents", "layers", "mounts", "tags", "entry_buckets", "problems",
         "settings")


def _columns(table: str) -> list[sa.Column[Any]]:
    """A table's own columns (without ``store_id``), as revisions 0001-0004 left them."""
    text, big, integer = sa.Text, sa.BigInteger, sa.Integer
    specs: dict[str, list[tuple[str, Any, bool]]] = {
        "images": [("id", ID, False), ("created", text(), True), ("os", text(), False),
                   ("architecture", text(), False), ("variant", text(), False),
                   ("author", text(), False), ("comment", text(), False),
                   ("docker_version", text(), False), ("chain_id", ID, True),
                   ("layer_count", integer(), False), ("last_updated", text(), True),
                   ("built_locally", sa.Boolean(), False), ("config_size", integer(), False),
                   ("raw", sa.LargeBinary(), False)],
        "image_parents": [("child_id", ID, False), ("parent_id", ID, False)],
        "layers": [("chain_id", ID, False), ("diff_id", ID, False), ("parent_id", ID, True),
                   ("diff_size", big(), False), ("size", big(), False),
                   ("cache_id", text(), False), ("depth", integer(), False)],
        "mounts": [("name", text(), False), ("mount_id", text(), False),
                   ("init_id", text(), False), ("parent_id", ID, True)],
        "tags": [("ref", text(), False), ("repository", text(), False), ("tag", text(), True),
                 ("digest", text(), True), ("image_id", ID, False)],
        "entry_buckets": [("prefix", PATH, False), ("digest", big(), False),
                          ("entries", integer(), False), ("signatures", text(), False)],
        "problems": [("path", PATH, False), ("kind", sa.String(32), False),
                     ("reason", text(), False), ("found_at", text(), False)],
        "settings": [("key", text(), False), ("value", text(), False)],
    }
    return [sa.Column(name, kind, nullable=nullable) for name, kind, nullable in specs[table]]


def _names(table: str) -> str:
    return ", ".join(c.name for c in _columns(table))


def _create_tables(*, with_stores: bool) -> None:
    """Every table, keyed by ``store_id`` first (this revision) or not (revision 0004)."""
    for table in ORDER:
        key = KEYS[table]
        columns: list[Any] = _columns(table)
        if with_stores:
            columns = [sa.Column("store_id", sa.Integer(), nullable=False), *columns,
                       sa.ForeignKeyConstraint(["store_id"], ["stores.id"],
                                               name=f"fk_{table}_store_id_stores",
                                               ondelete="CASCADE"),
                       sa.PrimaryKeyConstraint("store_id", key, name=f"pk_{table}")]
            if table == "image_parents":
                columns.append(sa.ForeignKeyConstraint(
                    ["store_id", "child_id"], ["images.store_id", "images.id"],
                    name="fk_image_parents_child_images", ondelete="CASCADE"))
        else:
            columns.append(sa.PrimaryKeyConstraint(key, name=f"pk_{table}"))
            if table == "image_parents":
                columns.append(sa.ForeignKeyConstraint(
                    ["child_id"], ["images.id"], name="fk_image_parents_child_id_images",
                    ondelete="CASCADE"))
        op.create_table(table, *columns)
    for table, indexes in (NEW_INDEXES if with_stores else OLD_INDEXES).items():
        for name, cols in indexes.items():
            op.create_index(name, table, list(cols))


def _set_aside(indexes: dict[str, dict[str, tuple[str, ...]]]) -> None:
    """Rename each table to ``old_<table>``, its indexes dropped and (on PostgreSQL, where
    the names of primary keys share one namespace) its primary key renamed, so the table
    made in its place can take the same names."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in reversed(ORDER):
        for name in indexes.get(table, {}):
            op.drop_index(name, table_name=table)
        op.rename_table(table, f"old_{table}")
        if postgresql:
            op.execute(f"ALTER TABLE old_{table} RENAME CONSTRAINT pk_{table} "
                       f"TO old_pk_{table}")


def _drop_old_tables() -> None:
    for table in reversed(ORDER):
        op.drop_table(f"old_{table}")


def _holds_data(bind: sa.Connection) -> bool:
    return any(bind.execute(sa.text(f"SELECT 1 FROM old_{t} LIMIT 1")).first() is not None
               for t in ORDER)


# The one dialect difference in these views: joining strings of a group.
_JOIN = {"sqlite": "group_concat({expr}, ', ')", "postgresql": "string_agg({expr}, ', ')"}
OLD_VIEWS = ("sync_problems", "layer_usage", "image_layers", "image_list")


# Each planner's best form (measured by bench/fleet.py): SQLite answers a count per store from
# the key's range; PostgreSQL, planning on statistics taken mid-sync, does better with one
# grouped scan per table.
_SUMMARY = {
    "sqlite": """
            SELECT s.name AS store, s.host, s.root, s.driver, s.last_sync,
                   (SELECT COUNT(*) FROM images i WHERE i.store_id = s.id) AS images,
                   (SELECT COUNT(*) FROM tags t WHERE t.store_id = s.id) AS tags,
                   (SELECT COUNT(*) FROM layers l WHERE l.store_id = s.id) AS layers,
                   (SELECT COUNT(*) FROM mounts m WHERE m.store_id = s.id) AS containers,
                   (SELECT COALESCE(SUM(l.diff_size), 0) FROM layers l
                    WHERE l.store_id = s.id) AS bytes
            FROM stores s""",
    "postgresql": """
            SELECT s.name AS store, s.host, s.root, s.driver, s.last_sync,
                   COALESCE(i.n, 0) AS images,
                   COALESCE(t.n, 0) AS tags,
                   COALESCE(l.n, 0) AS layers,
                   COALESCE(m.n, 0) AS containers,
                   COALESCE(l.bytes, 0) AS bytes
            FROM stores s
            LEFT JOIN (SELECT store_id, COUNT(*) AS n FROM images GROUP BY store_id) i
                   ON i.store_id = s.id
            LEFT JOIN (SELECT store_id, COUNT(*) AS n FROM tags GROUP BY store_id) t
                   ON t.store_id = s.id
            LEFT JOIN (SELECT store_id, COUNT(*) AS n, SUM(diff_size) AS bytes
                       FROM layers GROUP BY store_id) l ON l.store_id = s.id
            LEFT JOIN (SELECT store_id, COUNT(*) AS n FROM mounts GROUP BY store_id) m
                   ON m.store_id = s.id""",
}


def _views(join: str, dialect: str) -> dict[str, str]:
    """Revision 0002's views, each with a ``store`` column last (every other column keeps its
    name, place and meaning), and the cross-store questions of a fleet."""
    tags = join.format(expr="ref")
    ids = join.format(expr="c.image_id")
    names = join.format(expr="s.name")
    chains = """
            WITH RECURSIVE chain(store_id, image_id, chain_id, position) AS (
                SELECT store_id, id, chain_id, layer_count FROM images
                WHERE chain_id IS NOT NULL
                UNION ALL
                SELECT c.store_id, c.image_id, l.parent_id, c.position - 1
                FROM chain c JOIN layers l
                     ON l.store_id = c.store_id AND l.chain_id = c.chain_id
                WHERE l.parent_id IS NOT NULL
            )"""
    return {
        # One row per image, with what `docker images` and `docker image inspect` show.
        "image_list": f"""
            SELECT i.id,
                   substr(i.id, 8, 12) AS short_id,
                   (SELECT {tags} FROM (SELECT t.ref FROM tags t
                                        WHERE t.store_id = i.store_id AND t.image_id = i.id
                                        ORDER BY t.ref) AS r) AS tags,
                   i.created,
                   i.os,
                   i.architecture,
                   COALESCE(l.size, 0) AS size,
                   i.layer_count,
                   p.parent_id AS parent,
                   NOT EXISTS (SELECT 1 FROM image_parents c
                               WHERE c.store_id = i.store_id AND c.parent_id = i.id) AS is_head,
                   (NOT EXISTS (SELECT 1 FROM image_parents c
                                WHERE c.store_id = i.store_id AND c.parent_id = i.id)
                    AND NOT EXISTS (SELECT 1 FROM tags t
                                    WHERE t.store_id = i.store_id AND t.image_id = i.id))
                       AS is_dangling,
                   i.last_updated,
                   i.built_locally,
                   i.chain_id,
                   s.name AS store
            FROM images i
            JOIN stores s ON s.id = i.store_id
            LEFT JOIN image_parents p ON p.store_id = i.store_id AND p.child_id = i.id
            LEFT JOIN layers l ON l.store_id = i.store_id AND l.chain_id = i.chain_id""",
        # Every layer of every image (its whole chain), position 1 = the bottom layer.
        "image_layers": f"""{chains}
            SELECT c.image_id, c.chain_id, c.position, s.name AS store
            FROM chain c JOIN stores s ON s.id = c.store_id""",
        # Which images share each layer, and the bytes that sharing saves (within a store).
        "layer_usage": f"""{chains}
            SELECT l.chain_id,
                   l.diff_id,
                   l.diff_size,
                   l.size AS chain_size,
                   COUNT(c.image_id) AS images,
                   CASE WHEN COUNT(c.image_id) > 1
                        THEN l.diff_size * (COUNT(c.image_id) - 1) ELSE 0 END AS shared_bytes,
                   (SELECT COUNT(*) FROM mounts m
                    WHERE m.store_id = l.store_id AND m.parent_id = l.chain_id) AS containers,
                   {ids} AS image_ids,
                   s.name AS store
            FROM layers l
            JOIN stores s ON s.id = l.store_id
            LEFT JOIN chain c ON c.store_id = l.store_id AND c.chain_id = l.chain_id
            GROUP BY l.store_id, s.name, l.chain_id, l.diff_id, l.diff_size, l.size""",
        # What the last syncs skipped, and why.
        "sync_problems": """
            SELECT p.path, p.kind, p.reason, p.found_at, s.name AS store
            FROM problems p JOIN stores s ON s.id = p.store_id""",
        # Each store with its totals: images, tags, layers, containers and layer bytes.
        "store_summary": _SUMMARY[dialect],
        # One row per layer per store holding it: "which hosts have this layer?"
        "layer_stores": """
            SELECT l.diff_id, l.chain_id, l.diff_size, s.name AS store
            FROM layers l JOIN stores s ON s.id = l.store_id""",
        # Layers (by diff ID) held by more than one store.
        "shared_layers": f"""
            SELECT l.diff_id,
                   MAX(l.diff_size) AS diff_size,
                   COUNT(DISTINCT l.store_id) AS stores,
                   {names} AS store_names
            FROM layers l JOIN stores s ON s.id = l.store_id
            GROUP BY l.diff_id
            HAVING COUNT(DISTINCT l.store_id) > 1""",
        # Every tag, with the store it is in.
        "tag_list": """
            SELECT t.ref, t.repository, t.tag, t.digest, t.image_id, s.name AS store
            FROM tags t JOIN stores s ON s.id = t.store_id""",
    }


def _drop_views(names: tuple[str, ...]) -> None:
    for name in names:
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _dialect() -> str:
    return "sqlite" if op.get_bind().dialect.name == "sqlite" else "postgresql"


def _join() -> str:
    return _JOIN[_dialect()]


def upgrade() -> None:
    bind = op.get_bind()
    _drop_views(OLD_VIEWS)
    op.create_table(
        "stores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", PATH, nullable=False),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("root", sa.Text(), nullable=True),
        sa.Column("driver", sa.Text(), nullable=True),
        sa.Column("last_sync", sa.Text(), nullable=True),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stores"),
        sa.UniqueConstraint("name", name="uq_stores_name"))
    _set_aside(OLD_INDEXES)
    _create_tables(with_stores=True)
    if _holds_data(bind):
        given = context.config.attributes.get("store") or {}
        stores = sa.table("stores", sa.column("id"), sa.column("name"), sa.column("host"),
                          sa.column("root"), sa.column("driver"), sa.column("redacted"))
        op.bulk_insert(stores, [{"id": 1, "name": given.get("name", UNNAMED),
                                 "host": given.get("host"), "root": given.get("root"),
                                 "driver": given.get("driver"), "redacted": False}])
        for table in ORDER:
            columns = _names(table)
            bind.execute(sa.text(f"INSERT INTO {table} (store_id, {columns}) "
                                 f"SELECT 1, {columns} FROM old_{table}"))
    _drop_old_tables()
    if bind.dialect.name == "postgresql":  # the id sequence must not hand out 1 again
        bind.execute(sa.text("SELECT setval(pg_get_serial_sequence('stores', 'id'), "
                             "COALESCE((SELECT max(id) FROM stores), 0) + 1, false)"))
    for name, body in _views(_join(), _dialect()).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    bind = op.get_bind()
    count = bind.execute(sa.text("SELECT count(*) FROM stores")).scalar_one()
    if count > 1:
        raise RuntimeError(f"this index holds {count} stores; the schema before revision "
                           f"0005 holds one: forget the others first (imagestore stores rm)")
    _drop_views(tuple(reversed(_views("", "sqlite").keys())))
    _set_aside(NEW_INDEXES)
    _create_tables(with_stores=False)
    for table in ORDER:
        columns = _names(table)
        bind.execute(sa.text(f"INSERT INTO {table} ({columns}) SELECT {columns} "
                             f"FROM old_{table}"))
    _drop_old_tables()
    op.drop_table("stores")
    # Revision 0002's own views, as it makes them.
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(context.config).get_revision("0002")
    assert script is not None
    script.module.upgrade()
