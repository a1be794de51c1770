"""containerd's image store as a second kind of store: ``stores.kind`` and
``stores.namespace``, and the ``ctd_*`` tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

A store is ``moby`` (the classic store under ``image/<driver>``, every store before this
revision) or ``containerd`` (one namespace of a containerd root, read-only). A containerd
store keeps its records, targets, platform manifests, configs, layers, snapshots and
containers in the ``ctd_*`` tables, and also fills ``images``, ``image_parents``, ``tags``
and ``layers`` as Docker 29 sees them (an image ID is a target digest), so every question
and every view answers for both kinds. The views keep every column (name, place, meaning)
and gain the store's kind as their last column: ``kind`` (``store_summary`` also
``namespace``), ``kinds`` in ``shared_layers``, and ``store_kind`` in ``sync_problems``, whose
``kind`` is the problem's. A containerd container is a ``mounts`` row, as
a classic one is: its rootfs snapshot keeps its image's top layer.

The downgrade forgets the containerd stores (the schema before knows none) and gives the
views back as revision 0005 made them.
"""

from __future__ import annotations

from types import ModuleType

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(71).with_variant(sa.String(71, collation="C"), "postgresql")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
TABLES = ("ctd_images", "ctd_targets", "ctd_manifests", "ctd_configs", "ctd_layers",
          "ctd_snapshots", "ctd_containers")


def _store_column() -> sa.Column[int]:
    return sa.Column("store_id", sa.Integer(), sa.ForeignKey(
        "stores.id", ondelete="CASCADE", name=None), nullable=False)


def _revision_0005() -> ModuleType:
    """Revision 0005's module: its views are the ones this revision extends."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(context.config).get_revision("0005")
    assert script is not None
    return script.module


def _views() -> dict[str, str]:
    old = _revision_0005()
    dialect = old._dialect()
    join = old._JOIN[dialect]
    views: dict[str, str] = old._views(join, dialect)
    out = {}
    for name, body in views.items():
        if name == "store_summary":
            body = body.replace(" AS bytes\n", " AS bytes, s.kind AS kind, "
                                "s.namespace AS namespace\n", 1)
        elif name == "shared_layers":
            kinds = join.format(expr="DISTINCT s.kind").replace(", ', ')", ")") \
                if dialect == "sqlite" else join.format(expr="DISTINCT s.kind")
            body = body.replace(" AS store_names",
                                f" AS store_names,\n{' ' * 19}{kinds} AS kinds", 1)
        else:
            column = "store_kind" if name == "sync_problems" else "kind"
            body = body.replace("s.name AS store", f"s.name AS store, s.kind AS {column}", 1)
            body = body.replace("GROUP BY l.store_id, s.name,", "GROUP BY l.store_id, s.name, "
                                "s.kind,", 1)
        out[name] = body
    return out


def _columns(name: str) -> list[sa.Column[object]]:
    big, text, boolean = sa.BigInteger, sa.Text, sa.Boolean
    spec: dict[str, list[tuple[str, object, bool]]] = {
        "ctd_images": [("name", PATH, False), ("target", ID, False), ("media_type", text(), False),
                       ("size", big(), False), ("created_at", text(), True),
                       ("updated_at", text(), True), ("labels", text(), False),
                       ("annotations", text(), False)],
        "ctd_targets": [("image_id", ID, False), ("digest", ID, False),
                        ("media_type", text(), False),
                        ("size", big(), False), ("is_index", boolean(), False),
                        ("present", boolean(), False), ("problem", text(), True),
                        ("entries", text(), True)],
        "ctd_manifests": [("image_id", ID, False), ("position", sa.Integer(), False),
                          ("digest", ID, False), ("media_type", text(), False),
                          ("size", big(), False), ("platform", text(), True),
                          ("annotations", text(), False), ("kind", text(), False),
                          ("available", boolean(), False), ("config_digest", ID, True),
                          ("config_media_type", text(), True), ("config_size", big(), True),
                          ("best", boolean(), False), ("problem", text(), True)],
        "ctd_configs": [("digest", ID, False), ("present", boolean(), False),
                        ("raw", sa.LargeBinary(), True)],
        "ctd_layers": [("manifest", ID, False), ("position", sa.Integer(), False),
                       ("digest", ID, False), ("media_type", text(), False),
                       ("size", big(), False), ("present", boolean(), False),
                       ("diff_id", ID, True), ("chain_id", ID, True), ("unpacked", big(), True)],
        "ctd_snapshots": [("snapshotter", text(), False), ("key", PATH, False),
                          ("parent", PATH, True), ("backend", text(), False),
                          ("backend_id", big(), True), ("kind", text(), True),
                          ("size", big(), True), ("inodes", big(), True)],
        "ctd_containers": [("id", text(), False), ("image", text(), False),
                           ("snapshotter", text(), False), ("snapshot_key", text(), False),
                           ("manifest", ID, True)],
    }
    return [sa.Column(n, t, nullable=null) for n, t, null in spec[name]]  # type: ignore[arg-type]


KEYS = {"ctd_images": ("name",), "ctd_targets": ("image_id", "digest"),
        "ctd_manifests": ("image_id", "position"), "ctd_configs": ("digest",),
        "ctd_layers": ("manifest", "position"), "ctd_snapshots": ("snapshotter", "key"),
        "ctd_containers": ("id",)}
INDEXES = {"ix_ctd_images_target": ("ctd_images", ("store_id", "target")),
           "ix_ctd_manifests_digest": ("ctd_manifests", ("store_id", "digest")),
           "ix_ctd_layers_diff": ("ctd_layers", ("diff_id", "store_id"))}


def upgrade() -> None:
    old = _revision_0005()
    for name in reversed(old._views("", "sqlite")):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    # Plain ALTER TABLE on both databases (a batch copy would rename a table views read).
    op.add_column("stores", sa.Column("kind", sa.Text(), nullable=False,
                                      server_default="moby"))
    op.add_column("stores", sa.Column("namespace", sa.Text(), nullable=True))
    for name in TABLES:
        op.create_table(
            name,
            sa.Column("store_id", sa.Integer(), nullable=False),
            *_columns(name),
            sa.ForeignKeyConstraint(["store_id"], ["stores.id"], ondelete="CASCADE",
                                    name=f"fk_{name}_store_id_stores"),
            sa.PrimaryKeyConstraint("store_id", *KEYS[name], name=f"pk_{name}"))
    for index, (table, columns) in INDEXES.items():
        op.create_index(index, table, list(columns))
    for name, body in _views().items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    old = _revision_0005()
    for name in reversed(_views()):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    bind = op.get_bind()
    gone = [r[0] for r in bind.execute(sa.text("SELECT id FROM stores WHERE kind <> 'moby'"))]
    for name in TABLES:
        op.drop_table(name)
    for store in gone:
        for table in ("image_parents", "images", "layers", "mounts", "tags", "entry_buckets",
                      "problems", "settings"):
            bind.execute(sa.text(f"DELETE FROM {table} WHERE store_id = :s"), {"s": store})
        bind.execute(sa.text("DELETE FROM stores WHERE id = :s"), {"s": store})
    op.drop_column("stores", "namespace")
    op.drop_column("stores", "kind")
    dialect = old._dialect()
    for name, body in old._views(old._JOIN[dialect], dialect).items():
        op.execute(f"CREATE VIEW {name} AS {body}")
