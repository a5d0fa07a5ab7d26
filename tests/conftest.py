"""Shared fixtures: a migrated database (SQLite file, or PostgreSQL when
BRIDGE_TEST_DATABASE_URL is set), settings, and the app from the factory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import ORMExecuteState, Session
from werkzeug.serving import make_server

from bridge import migrate
from bridge.app import create_app
from bridge.config import Settings, parse_settings
from bridge.db import Base, make_engine
from bridge.models import Attempt, Event, Service  # noqa: F401
from bridge.web import runtime

WHMCS_SECRET = "whsec_dGVzdC13aG1jcy1zZWNyZXQtb25lLTMyYnl0ZXMh"
WHMCS_OLD_SECRET = "whsec_dGVzdC13aG1jcy1zZWNyZXQtdHdvLTMyYnl0ZXMh"
BLESTA_SECRET = "whsec_dGVzdC1ibGVzdGEtc2VjcmV0LTMyYnl0ZXMtbG9uZw=="


def base_config(database_url: str) -> dict[str, Any]:
    """A complete config tree, as a YAML file would give it."""
    return {
        "database_url": database_url,
        "mailserver": {
            "base_url": "http://127.0.0.1:9",
            "username": "admin",
            "password": "Sim-Master-Passw0rd",
            "unlimited_value": 1000000,
        },
        "sources": {
            "whmcs": {"kind": "whmcs", "secrets": [WHMCS_SECRET, WHMCS_OLD_SECRET]},
            "blesta": {"kind": "blesta", "secrets": [BLESTA_SECRET]},
        },
        "tiers": {
            "starter": {
                "domains": 1,
                "domain_aliases": 1,
                "aliases": 10,
                "mailboxes": 5,
                "storage_mb": 5120,
            },
            "business": {
                "domains": 3,
                "domain_aliases": 3,
                "aliases": 50,
                "mailboxes": 25,
                "storage_mb": 51200,
            },
            "agency": {
                "domains": 20,
                "domain_aliases": 20,
                "aliases": "unlimited",
                "mailboxes": 200,
                "storage_mb": 512000,
            },
        },
        "products": {
            "whmcs": {1: "starter", 2: "business", 3: "agency"},
            "blesta": {1: "starter", 2: "business"},
        },
        "addons": {
            "whmcs": {
                "extra_mailboxes": {"mailboxes": 1, "storage_mb": 1024},
                "extra_storage_gb": {"storage_mb": 1024},
            },
            "blesta": {"extra_mailboxes": {"mailboxes": 1, "storage_mb": 1024}},
        },
        "intake": {"max_body_bytes": 4096, "inline_timeout_s": 0},
        "admin": {"secret_key": "test-secret-key"},
    }


def reset_schema(engine: Engine) -> None:
    """Drop everything, including Alembic's version table, so migrations start from empty."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


def worker_database(url: str) -> str:
    """Under pytest-xdist (`make test` runs two workers) each worker gets a PostgreSQL
    database of its own, `<name>_<worker>`, created when missing; SQLite files are per worker
    already (tmp_path_factory)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    parsed = make_url(url)
    if not worker or parsed.get_backend_name() != "postgresql":
        return url
    own = parsed.set(database=f"{parsed.database}_{worker}")
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": own.database}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{own.database}"'))
    finally:
        admin.dispose()
    return own.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test database, migrated from empty once per session."""
    url = os.environ.get("BRIDGE_TEST_DATABASE_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'bridge.db'}"
    )
    url = worker_database(url)
    engine = make_engine(url)
    reset_schema(engine)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def config_tree(database_url: str) -> dict[str, Any]:
    """A fresh, editable config tree per test."""
    return base_config(database_url)


@pytest.fixture
def settings(config_tree: dict[str, Any]) -> Settings:
    """Validated settings built from config_tree."""
    return parse_settings(config_tree, {})


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The bridge, from its factory, on an emptied database."""
    application = create_app(settings, configure_logs=False)
    application.config["TESTING"] = True
    engine = runtime(application).engine
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    yield application
    engine.dispose()


@pytest.fixture
def db(app: Flask, database_url: str) -> Iterator[Session]:
    """A session for assertions that never holds a lock and always reads the newest rows."""
    if database_url.startswith("sqlite"):
        engine = make_engine(database_url, immediate=False)
    else:
        engine = make_engine(database_url, isolation_level="AUTOCOMMIT")
    session = Session(engine)

    @event.listens_for(session, "do_orm_execute")
    def _fresh(state: ORMExecuteState) -> None:
        if state.is_select:
            state.update_execution_options(populate_existing=True)

    yield session
    session.close()
    engine.dispose()


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The bridge served over real HTTP on a free loopback port (threaded, like gunicorn)."""
    from nmsim.server import QuietHandler

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="bridge-live", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
