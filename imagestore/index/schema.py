"""The index's tables. Alembic revisions create them; these models describe them.

The index is derived data: every row can be rebuilt from the root. Columns are plain types
that sqlite3, sqlite-utils and Datasette users can query directly.

One index holds many stores (a fleet's hosts, an investigator's disk images): every row
belongs to one ``stores`` row, and every key starts with ``store_id``, so a store's rows are
one range of each table and two stores never touch each other's rows or index pages.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Prefix searches and path ranges compare bytes: on PostgreSQL these columns use the C
# collation whatever the database's locale (SQLite compares bytes already).
ID = String(71).with_variant(String(71, collation="C"), "postgresql")  # "sha256:" + 64 hex
PATH = Text().with_variant(Text(collation="C"), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _store_id() -> Mapped[int]:
    return mapped_column(Integer, ForeignKey("stores.id", ondelete="CASCADE"),
                         primary_key=True)


class StoreRow(Base):
    """One image root mirrored by the index, under the name its users gave it."""

    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(PATH, unique=True)
    host: Mapped[str | None] = mapped_column(Text)
    root: Mapped[str | None] = mapped_column(Text)
    driver: Mapped[str | None] = mapped_column(Text)
    last_sync: Mapped[str | None] = mapped_column(Text)
    # Configs are stored with their Env values and build arguments redacted.
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    # "moby" (the classic store under image/<driver>) or "containerd" (read-only).
    kind: Mapped[str] = mapped_column(Text, server_default="moby")
    namespace: Mapped[str | None] = mapped_column(Text)  # containerd's only


class ImageRecord(Base):
    """An image that passed the restore checks (valid config, digest, layer present)."""

    __tablename__ = "images"

    store_id: Mapped[int] = _store_id()
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    created: Mapped[str | None] = mapped_column(Text)
    os: Mapped[str] = mapped_column(Text)
    architecture: Mapped[str] = mapped_column(Text)
    variant: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(Text)
    docker_version: Mapped[str] = mapped_column(Text)
    chain_id: Mapped[str | None] = mapped_column(ID)
    layer_count: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[str | None] = mapped_column(Text)
    built_locally: Mapped[bool] = mapped_column(Boolean)
    config_size: Mapped[int] = mapped_column(Integer)
    # Last so that scans of the narrow columns never read the (overflow) config pages.
    raw: Mapped[bytes] = mapped_column(LargeBinary)

    # Listings walk every image without touching the wide rows.
    __table_args__ = (Index("ix_images_chain", "store_id", "chain_id"),
                      Index("ix_images_listing", "store_id", "id", "created", "chain_id"))


class ParentEdge(Base):
    """``metadata/…/parent`` of an image in the index; the parent itself may be absent."""

    __tablename__ = "image_parents"

    store_id: Mapped[int] = _store_id()
    child_id: Mapped[str] = mapped_column(ID, primary_key=True)
    parent_id: Mapped[str] = mapped_column(ID)

    __table_args__ = (
        ForeignKeyConstraint(["store_id", "child_id"], ["images.store_id", "images.id"],
                             name="fk_image_parents_child_images", ondelete="CASCADE"),
        Index("ix_image_parents_parent", "store_id", "parent_id"),
    )


class LayerRow(Base):
    """A layerdb entry that moby's layer store would load."""

    __tablename__ = "layers"

    store_id: Mapped[int] = _store_id()
    chain_id: Mapped[str] = mapped_column(ID, primary_key=True)
    diff_id: Mapped[str] = mapped_column(ID)
    parent_id: Mapped[str | None] = mapped_column(ID)
    diff_size: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)  # the whole chain's, as docker reports it
    cache_id: Mapped[str] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(Integer)

    # Led by the digest, not the store: "which stores hold this layer?" is one range read.
    __table_args__ = (Index("ix_layers_diff", "diff_id", "store_id"),
                      Index("ix_layers_chain", "chain_id", "store_id"),
                      Index("ix_layers_parent", "store_id", "parent_id"))


class MountRow(Base):
    """A container's read-write layer; it holds a reference to its image's top layer."""

    __tablename__ = "mounts"

    store_id: Mapped[int] = _store_id()
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    mount_id: Mapped[str] = mapped_column(Text)
    init_id: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(ID)

    __table_args__ = (Index("ix_mounts_parent", "store_id", "parent_id"),)


class TagRow(Base):
    """A reference from ``repositories.json``; the image it names may be absent.
    ``misfiled``: an entry moby's reference store lists among the image's references but
    does not find by name (filed under another repository, or not in familiar form)."""

    __tablename__ = "tags"

    store_id: Mapped[int] = _store_id()
    ref: Mapped[str] = mapped_column(Text, primary_key=True)
    repository: Mapped[str] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(Text)
    image_id: Mapped[str] = mapped_column(ID)
    misfiled: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (Index("ix_tags_image", "store_id", "image_id"),)


class EntryBucketRow(Base):
    """What was on disk when the entries whose path starts with ``prefix`` were last read:
    their signatures (a JSON object, name -> signature) and the digest of them, so unchanged
    entries are neither read again nor even compared one by one."""

    __tablename__ = "entry_buckets"

    store_id: Mapped[int] = _store_id()
    prefix: Mapped[str] = mapped_column(PATH, primary_key=True)
    digest: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(Integer)
    signatures: Mapped[str] = mapped_column(Text)


class ProblemRow(Base):
    """A store entry that was skipped, and why (moby logs these and carries on)."""

    __tablename__ = "problems"

    store_id: Mapped[int] = _store_id()
    path: Mapped[str] = mapped_column(PATH, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    found_at: Mapped[str] = mapped_column(Text)


class SettingRow(Base):
    """Facts about a store's rows (the signature scheme, folder signatures)."""

    __tablename__ = "settings"

    store_id: Mapped[int] = _store_id()
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CtdImageRow(Base):
    """A record of containerd's ``v1/<namespace>/images``: a name and its target. Many
    records share a target: Docker 29 shows them as one image, whose ID is the target."""

    __tablename__ = "ctd_images"

    store_id: Mapped[int] = _store_id()
    name: Mapped[str] = mapped_column(PATH, primary_key=True)
    target: Mapped[str] = mapped_column(ID)
    media_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[str | None] = mapped_column(Text)
    labels: Mapped[str] = mapped_column(Text)  # JSON object
    annotations: Mapped[str] = mapped_column(Text)  # JSON object

    __table_args__ = (Index("ix_ctd_images_target", "store_id", "target"),)


class CtdTargetRow(Base):
    """An image's target (``digest`` = ``image_id``) and every index blob walked from it."""

    __tablename__ = "ctd_targets"

    store_id: Mapped[int] = _store_id()
    image_id: Mapped[str] = mapped_column(ID, primary_key=True)
    digest: Mapped[str] = mapped_column(ID, primary_key=True)
    media_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    is_index: Mapped[bool] = mapped_column(Boolean)
    present: Mapped[bool] = mapped_column(Boolean)
    problem: Mapped[str | None] = mapped_column(Text)
    entries: Mapped[str | None] = mapped_column(Text)  # an index's manifests[] (JSON)


class CtdManifestRow(Base):
    """A platform manifest of an image (the target itself, or an entry of its index)."""

    __tablename__ = "ctd_manifests"

    store_id: Mapped[int] = _store_id()
    image_id: Mapped[str] = mapped_column(ID, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(ID)
    media_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    platform: Mapped[str | None] = mapped_column(Text)  # os/arch[/variant]
    annotations: Mapped[str] = mapped_column(Text)  # JSON object
    kind: Mapped[str] = mapped_column(Text)  # image, attestation, unknown
    available: Mapped[bool] = mapped_column(Boolean)
    config_digest: Mapped[str | None] = mapped_column(ID)
    config_media_type: Mapped[str | None] = mapped_column(Text)
    config_size: Mapped[int | None] = mapped_column(BigInteger)
    best: Mapped[bool] = mapped_column(Boolean)  # the one that answers for the image
    problem: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_ctd_manifests_digest", "store_id", "digest"),)


class CtdConfigRow(Base):
    """An image config blob, by digest (shared by every manifest naming it)."""

    __tablename__ = "ctd_configs"

    store_id: Mapped[int] = _store_id()
    digest: Mapped[str] = mapped_column(ID, primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)


class CtdLayerRow(Base):
    """A layer of a manifest: its blob, its diff ID and chain ID, and its snapshot's usage
    when it is unpacked (``None`` otherwise)."""

    __tablename__ = "ctd_layers"

    store_id: Mapped[int] = _store_id()
    manifest: Mapped[str] = mapped_column(ID, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(ID)
    media_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    present: Mapped[bool] = mapped_column(Boolean)
    diff_id: Mapped[str | None] = mapped_column(ID)
    chain_id: Mapped[str | None] = mapped_column(ID)
    unpacked: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_ctd_layers_diff", "diff_id", "store_id"),)


class CtdSnapshotRow(Base):
    """A snapshot of the namespace, with what its snapshotter's own database says."""

    __tablename__ = "ctd_snapshots"

    store_id: Mapped[int] = _store_id()
    snapshotter: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(PATH, primary_key=True)
    parent: Mapped[str | None] = mapped_column(PATH)
    backend: Mapped[str] = mapped_column(Text)
    backend_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str | None] = mapped_column(Text)  # committed, active, view
    size: Mapped[int | None] = mapped_column(BigInteger)
    inodes: Mapped[int | None] = mapped_column(BigInteger)


class CtdContainerRow(Base):
    """A container record of the namespace (it keeps its image's snapshots)."""

    __tablename__ = "ctd_containers"

    store_id: Mapped[int] = _store_id()
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    image: Mapped[str] = mapped_column(Text)
    snapshotter: Mapped[str] = mapped_column(Text)
    snapshot_key: Mapped[str] = mapped_column(Text)
    manifest: Mapped[str | None] = mapped_column(ID)  # the platform manifest it runs


class LayerFileListRow(Base):
    """A layer whose file list was read (``layer_files``), by diff ID: a content-addressed
    fact shared by every store holding the layer. ``problems``: what its tar-split held that
    is not in the list, one line each."""

    __tablename__ = "layer_file_lists"

    diff_id: Mapped[str] = mapped_column(ID, primary_key=True)
    entries: Mapped[int] = mapped_column(Integer)
    problems: Mapped[str | None] = mapped_column(Text)
    read_at: Mapped[str] = mapped_column(Text)


class LayerFileRow(Base):
    """One tar entry of a layer (``imagestore.moby.layerfiles.LayerFile``)."""

    __tablename__ = "layer_files"

    diff_id: Mapped[str] = mapped_column(ID, primary_key=True)
    path: Mapped[str] = mapped_column(PATH, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[int] = mapped_column(Integer)
    uid: Mapped[int] = mapped_column(BigInteger)
    gid: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[int] = mapped_column(BigInteger)
    link: Mapped[str | None] = mapped_column(PATH)
    crc64: Mapped[str | None] = mapped_column(Text)
    whiteout: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(PATH)

    __table_args__ = (Index("ix_layer_files_path", "path", "diff_id"),
                      Index("ix_layer_files_whiteout", "diff_id", "whiteout"))


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Every table whose rows belong to one store, children before parents.
STORE_TABLES = ("image_parents", "images", "layers", "mounts", "tags", "entry_buckets",
                "problems", "settings", "ctd_images", "ctd_targets", "ctd_manifests",
                "ctd_configs", "ctd_layers", "ctd_snapshots", "ctd_containers")
CTD_TABLES = STORE_TABLES[8:]

# Core handles for the hot paths (bulk inserts and set-based queries, no ORM objects).
stores = _table(StoreRow)
images = _table(ImageRecord)
parents = _table(ParentEdge)
layers = _table(LayerRow)
mounts = _table(MountRow)
tags = _table(TagRow)
entry_buckets = _table(EntryBucketRow)
problems = _table(ProblemRow)
settings = _table(SettingRow)
ctd_images = _table(CtdImageRow)
ctd_targets = _table(CtdTargetRow)
ctd_manifests = _table(CtdManifestRow)
ctd_configs = _table(CtdConfigRow)
ctd_layers = _table(CtdLayerRow)
ctd_snapshots = _table(CtdSnapshotRow)
ctd_containers = _table(CtdContainerRow)
layer_file_lists = _table(LayerFileListRow)
layer_files = _table(LayerFileRow)

__all__ = [
    "CTD_TABLES",
    "STORE_TABLES",
    "Base",
    "EntryBucketRow",
    "ImageRecord",
    "LayerFileListRow",
    "LayerFileRow",
    "LayerRow",
    "MountRow",
    "ParentEdge",
    "ProblemRow",
    "SettingRow",
    "StoreRow",
    "TagRow",
    "ctd_configs",
    "ctd_containers",
    "ctd_images",
    "ctd_layers",
    "ctd_manifests",
    "ctd_snapshots",
    "ctd_targets",
    "entry_buckets",
    "images",
    "layer_file_lists",
    "layer_files",
    "layers",
    "mounts",
    "parents",
    "problems",
    "settings",
    "stores",
    "tags",
]
