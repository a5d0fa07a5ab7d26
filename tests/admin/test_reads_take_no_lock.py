"""On SQLite the console, the API, /readyz and /metrics read without the write lock, so a
page view or a monitoring poll never makes a billing system's webhook wait (or fail)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from bridge.lifecycle import Action
from bridge.web import runtime
from tests.admin.conftest import log_in, make_token, send

PAGES = [
    "/admin/events",
    "/admin/events?source=whmcs&status=failed",
    "/readyz",
    "/metrics",
]
API = ["/api/events", "/api/events?source=whmcs", "/api/events?status=queued"]


@contextmanager
def write_lock_held(database_url: str) -> Iterator[None]:
    """Another process's writer in the middle of its transaction, as intake would be."""
    other = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_reads_are_served_while_a_writer_holds_the_lock(app, client, viewer, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's single write lock; PostgreSQL readers never take one")
    send(client, Action.CREATE)
    send(client, Action.SUSPEND)
    log_in(client, viewer)
    headers = {"Authorization": f"Bearer {make_token(app, viewer)}"}
    assert client.get("/api/me", headers=headers).status_code == 200  # first use: written
    begins: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("BEGIN"):
            begins.append(statement)

    engine = runtime(app).engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        # A read that asked for the lock would wait out the 30 s busy timeout, then fail.
        with write_lock_held(database_url):
            for url in PAGES:
                assert client.get(url).status_code == 200, url
            for url in API:
                response = client.get(url, headers=headers)
                assert response.status_code == 200, url
                assert response.get_json()["events"], url
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert begins == []
