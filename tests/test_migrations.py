"""Every schema change is an Alembic revision, tested as an upgrade of an index with data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_alembic import Config
from pytest_alembic.tests import (  # noqa: F401 - pytest collects these built-in tests
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine, inspect, text

import imagestore
from imagestore import db
from imagestore.entries import Root
from imagestore.sync import run


@pytest.fixture
def alembic_config() -> Config:
    # The scripts the installed package ships, not the checkout's: a plain install must work.
    return Config(config_options={"script_location": str(db.migrations_dir())})


@pytest.fixture
def alembic_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'alembic.sqlite'}")
    yield engine
    engine.dispose()


def test_migrations_ship_with_the_package() -> None:
    versions = {p.name for p in (db.migrations_dir() / "versions").glob("0*.py")}
    assert {"0001_initial.py", "0002_reporting_views.py"} <= versions
    assert db.head_revision() == db.HEAD == "0002"  # HEAD lets a warm open skip Alembic


def test_upgrade_0001_to_head_keeps_data(real_root: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = db.make_engine(url)
    db.upgrade(engine, "0001")
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        report = run(conn, Root(real_root))
    assert report.added == 39
    before = _counts(engine)
    assert "image_list" not in inspect(engine).get_view_names()
    engine.dispose()

    with imagestore.open(real_root, tmp_path / "old.sqlite", sync=False) as store:
        assert db.current_revision(store.engine) == "0002"
        assert _counts(store.engine) == before
        assert len(store) == 39
        with store.engine.connect() as conn:
            heads = conn.execute(text("SELECT count(*) FROM image_list WHERE is_head")).scalar()
        assert heads == len(store.heads()) == 8


def _counts(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("images", "image_parents", "layers", "mounts", "tags", "entries")}


def test_a_plain_engine_sees_the_views(real_root: Path, index: Path) -> None:
    imagestore.open(real_root, index).close()
    engine = create_engine(f"sqlite:///{index}")
    assert {"image_list", "image_layers", "layer_usage", "sync_problems"} <= set(
        inspect(engine).get_view_names())
    engine.dispose()
