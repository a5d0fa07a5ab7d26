"""The intake's write path (bridge/ledger.py record_event): the duplicate check and the insert
are one statement, one commit per delivery, and a repeat writes nothing, on both databases."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import DBAPIError

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.ledger import AlreadyStoredError, record_event
from bridge.lifecycle import Action, BillingEvent, EventStatus, Ignored
from bridge.models import Event, Service
from bridge.web import runtime
from tests.builders import post_hook, signed_headers

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def statements(app) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends, and "COMMIT" for each commit.

    Seen by the driver, not by engine events: the write path runs its statements on the
    DBAPI cursor (bridge/ledger.py _Prepared).
    """
    engine: Engine = runtime(app).engine
    seen: list[str] = []

    def note(statement: str | bytes) -> None:
        words = (statement.decode() if isinstance(statement, bytes) else statement).split()
        # the pool's ping on PostgreSQL is an empty statement (";")
        if words not in ([], [";"]) and words[0].upper() not in ("COMMIT", "ROLLBACK"):
            seen.append(" ".join(words))

    def on_checkout(dbapi_conn, _record, _proxy) -> None:
        if engine.dialect.name == "sqlite":
            dbapi_conn.set_trace_callback(note)
            return
        plain = getattr(dbapi_conn.cursor_factory, "plain", dbapi_conn.cursor_factory)

        class Traced(plain):  # type: ignore[misc, valid-type]
            def execute(self, query, *args, **kwargs):
                note(query.as_string(self) if hasattr(query, "as_string") else query)
                return super().execute(query, *args, **kwargs)

        Traced.plain = plain
        dbapi_conn.cursor_factory = Traced

    def on_commit(_conn) -> None:
        seen.append("COMMIT")

    engine.dispose()  # every connection from now on is checked out with the tracer
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "checkout", on_checkout)
    event.remove(engine, "commit", on_commit)
    engine.dispose()


def kinds(seen: list[str]) -> list[str]:
    """The statements' first words (BEGIN IMMEDIATE, SQLite's, left out)."""
    return [s.split()[0] for s in seen if not s.startswith("BEGIN")]


def test_a_new_event_is_three_statements_and_one_commit(client, statements):
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001))
    statements.clear()
    response = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001))
    assert response.status_code == 202
    # the service upserted and read back, the event inserted unless already there, the
    # service's changed columns: no SELECT to look for a duplicate first
    assert kinds(statements) == ["INSERT", "INSERT", "UPDATE", "COMMIT"]
    assert "ON CONFLICT" in statements[-3] and "RETURNING" in statements[-3]


def test_an_event_that_changes_nothing_updates_nothing(client, db, statements):
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001))
    before = db.scalar(select(Service))
    statements.clear()
    later = whmcs_envelope(Action.RENEW, 1001)
    assert post_hook(client, "whmcs", later).get_json()["status"] == "applied"
    assert kinds(statements) == ["INSERT", "INSERT", "COMMIT"]
    after = db.scalar(select(Service))
    assert (after.updated_at, after.generation) == (before.updated_at, before.generation)


def test_an_ignored_event_is_one_insert(client, statements):
    payload = blesta_body(Action.TERMINATE, 7)
    payload["vars"]["status"] = "active"
    assert post_hook(client, "blesta", payload).get_json()["status"] == "ignored"
    assert kinds(statements) == ["INSERT", "COMMIT"]


def test_a_repeat_writes_nothing_and_answers_the_first_outcome(client, db, statements):
    body = json.dumps(whmcs_envelope(Action.CREATE, 1001)).encode()
    first = client.post("/hooks/whmcs", data=body, headers=signed_headers("whmcs", body))
    stored = db.scalar(select(Service))
    webhook_id = db.scalar(select(Event.webhook_id))
    statements.clear()
    headers = signed_headers("whmcs", body, webhook_id=webhook_id)
    again = client.post("/hooks/whmcs", data=body, headers=headers)
    assert again.get_json() == {**first.get_json(), "duplicate": True}
    assert again.status_code == first.status_code == 202
    # the insert found the id taken: rolled back, then the stored event is read
    assert kinds(statements)[:3] == ["INSERT", "INSERT", "SELECT"]
    assert "UPDATE" not in kinds(statements)
    assert db.scalar(select(func.count()).select_from(Event)) == 1
    service = db.scalar(select(Service))
    assert (service.updated_at, service.generation) == (stored.updated_at, stored.generation)


def record(conn, rt, parsed, webhook_id: str):
    """record_event() with this test's fixed delivery details."""
    return record_event(
        conn,
        source="whmcs",
        webhook_id=webhook_id,
        body_sha256="a" * 64,
        parsed=parsed,
        password_hash=None,
        mappings=rt.settings.mappings,
        now=NOW,
    )


def test_a_repeat_of_an_ignored_event_creates_no_service(app, db):
    """The repeat is a create for a service nobody has seen: the upserted row goes with the
    rollback."""
    rt = runtime(app)
    ignored = Ignored("AfterModuleCancel", "555", "a cancel at the end of the term", {"x": 1})
    as_create = BillingEvent(Action.CREATE, "CreateAccount", "555", NOW, {"y": 2})
    for parsed, expect_error in ((ignored, False), (as_create, True)):
        try:
            with rt.engine.begin() as conn:
                recorded = record(conn, rt, parsed, "wh-555")
        except AlreadyStoredError:
            assert expect_error
        else:
            assert not expect_error
            assert recorded.status is EventStatus.IGNORED
    assert db.scalar(select(func.count()).select_from(Service)) == 0
    assert db.scalar(select(Event.status)) is EventStatus.IGNORED


def test_another_body_under_a_used_id_is_still_a_conflict(client, db, caplog):
    post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001), webhook_id="msg_x")
    caplog.set_level("INFO", logger="bridge.intake")
    response = post_hook(
        client, "whmcs", whmcs_envelope(Action.UNSUSPEND, 1001), webhook_id="msg_x"
    )
    assert response.status_code == 422
    assert response.get_json()["error"] == "idempotency_conflict"
    assert "reason=idempotency_conflict" in caplog.text
    assert db.scalar(select(func.count()).select_from(Event)) == 1


def test_the_same_delivery_at_once_from_many_threads_is_stored_once(live_url, db):
    """Deliveries racing each other: one insert wins, the others answer its outcome."""
    body = json.dumps(whmcs_envelope(Action.CREATE, 1001)).encode()
    headers = signed_headers("whmcs", body, webhook_id="msg_race")
    start = threading.Barrier(6)
    answers: list[tuple[int, dict]] = []

    def deliver() -> None:
        with requests.Session() as http:
            start.wait(timeout=10)
            got = http.post(f"{live_url}/hooks/whmcs", data=body, headers=headers, timeout=30)
            answers.append((got.status_code, got.json()))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 6
    firsts = [a for s, a in answers if not a.get("duplicate")]
    assert len(firsts) == 1
    assert {s for s, _ in answers} == {202}
    assert all({**a, "duplicate": True} == {**firsts[0], "duplicate": True} for _, a in answers)
    assert db.scalar(select(func.count()).select_from(Event)) == 1
    assert db.scalar(select(Service.generation)) == 1


def test_a_driver_error_is_raised_as_sqlalchemys_with_parameters_hidden(app, db):
    """The write path runs on the DBAPI cursor, yet the intake still gets SQLAlchemy's
    exceptions (an OperationalError is answered 503), and no value is in their text."""
    rt = runtime(app)
    with rt.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events RENAME TO events_gone")
    try:
        parsed = BillingEvent(Action.SUSPEND, "SuspendAccount", "556", NOW, {"y": 2})
        with pytest.raises(DBAPIError) as raised, rt.engine.begin() as conn:
            record(conn, rt, parsed, "wh-secret-556")
    finally:
        with rt.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events_gone RENAME TO events")
    assert isinstance(raised.value.orig, rt.engine.dialect.loaded_dbapi.Error)
    assert "INSERT INTO events" in str(raised.value)
    assert "SQL parameters hidden" in str(raised.value)
    assert "wh-secret-556" not in str(raised.value)
    assert db.scalar(select(func.count()).select_from(Service)) == 0


def test_a_lost_connection_is_invalidated_as_sqlalchemy_does_it(app):
    """The driver's connection gone under a transaction: the same exception, marked
    invalidated, as a statement run by SQLAlchemy gets; the pool drops the connection."""
    rt = runtime(app)
    parsed = BillingEvent(Action.SUSPEND, "SuspendAccount", "557", NOW, {"y": 2})
    raised = []
    for run in (
        lambda conn: conn.execute(select(Event.id)),
        lambda conn: record(conn, rt, parsed, "wh-557"),
    ):
        conn = rt.engine.connect()
        conn.begin()
        conn.connection.dbapi_connection.close()
        with pytest.raises(DBAPIError) as caught:
            run(conn)
        raised.append(caught.value)
        assert conn.invalidated
        conn.close()
    by_sqlalchemy, by_ledger = raised
    assert type(by_ledger) is type(by_sqlalchemy)
    assert by_ledger.connection_invalidated is by_sqlalchemy.connection_invalidated is True
    with rt.engine.begin() as conn:  # a new connection from the pool
        assert conn.execute(select(func.count()).select_from(Event)).scalar() == 0
