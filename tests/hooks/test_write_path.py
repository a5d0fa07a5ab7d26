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

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.ledger import AlreadyStoredError, record_event
from bridge.lifecycle import Action, BillingEvent, EventStatus, Ignored
from bridge.models import Event, Service
from bridge.web import runtime
from tests.builders import post_hook, signed_headers

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def statements(app) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends, and "COMMIT" for each commit."""
    engine: Engine = runtime(app).engine
    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args) -> None:
        seen.append(" ".join(statement.split()))

    def on_commit(_conn) -> None:
        seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "before_cursor_execute", on_execute)
    event.remove(engine, "commit", on_commit)


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


def test_a_repeat_of_an_ignored_event_creates_no_service(app, db):
    """The repeat is a create for a service nobody has seen: the upserted row goes with the
    rollback."""
    rt = runtime(app)
    ignored = Ignored("AfterModuleCancel", "555", "a cancel at the end of the term", {"x": 1})
    as_create = BillingEvent(Action.CREATE, "CreateAccount", "555", NOW, {"y": 2})
    for parsed, expect_error in ((ignored, False), (as_create, True)):
        try:
            with rt.engine.begin() as conn:
                recorded = record_event(
                    conn,
                    source="whmcs",
                    webhook_id="wh-555",
                    body_sha256="a" * 64,
                    parsed=parsed,
                    password_hash=None,
                    mappings=rt.settings.mappings,
                    now=NOW,
                )
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
