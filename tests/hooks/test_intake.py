"""POST /hooks/<source>: every row of the answers table, over the real app.

See docs/design.md#answers.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.lifecycle import Action, EventStatus, ServiceState
from bridge.models import Event, Service
from bridge.web import runtime
from tests.builders import post_hook, signed_headers
from tests.conftest import WHMCS_OLD_SECRET


def count_events(db) -> int:
    return db.scalar(select(func.count()).select_from(Event))


def test_create_is_stored_and_queued(client, db):
    response = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001, product=2))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["service"] == "1001"
    assert "next_attempt_at" in body
    event = db.get(Event, body["event_id"])
    assert event.action == "create" and event.status is EventStatus.QUEUED
    service = event.service
    assert service.desired_state is ServiceState.ACTIVE
    assert service.username == "mail1001"
    assert service.product_id == "2"
    assert service.client_email == "owner501@example.org"
    assert service.password_hash.startswith("{SHA512-CRYPT}$6$")
    assert service.generation == 1 and event.generation == 1


def test_renew_is_applied_in_the_request(client):
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001))
    response = post_hook(client, "whmcs", whmcs_envelope(Action.RENEW, 1001))
    assert response.status_code == 200
    assert response.get_json()["status"] == "applied"


def test_unmapped_product_is_stored_and_failed_with_reason(client, db):
    response = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1002, product=99))
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "failed"
    assert body["reason"] == "unmapped_product"
    assert '"99"' in body["message"]
    assert db.get(Event, body["event_id"]).status is EventStatus.FAILED


def test_unknown_tier_key_fails(client):
    payload = whmcs_envelope(Action.CREATE, 1003, tier_key="platinum")
    body = post_hook(client, "whmcs", payload).get_json()
    assert (body["status"], body["reason"]) == ("failed", "unknown_tier")


def test_duplicate_delivery_answers_first_outcome(client, db):
    payload = whmcs_envelope(Action.CREATE, 1001)
    body = json.dumps(payload).encode()
    headers = signed_headers("whmcs", body, webhook_id="msg_dup")
    first = client.post("/hooks/whmcs", data=body, headers=headers)
    again = client.post(
        "/hooks/whmcs", data=body, headers=signed_headers("whmcs", body, webhook_id="msg_dup")
    )
    assert again.status_code == first.status_code == 202
    assert again.get_json() == {**first.get_json(), "duplicate": True}
    assert count_events(db) == 1
    assert db.scalar(select(Service.generation)) == 1


def test_same_id_with_another_body_is_a_conflict(client, db):
    post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001), webhook_id="msg_x")
    response = post_hook(
        client, "whmcs", whmcs_envelope(Action.UNSUSPEND, 1001), webhook_id="msg_x"
    )
    assert response.status_code == 422
    assert response.get_json()["error"] == "idempotency_conflict"
    assert count_events(db) == 1


def test_older_event_is_superseded_and_changes_nothing(client, db):
    now = datetime.now(UTC)
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001, occurred_at=now))
    post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001, occurred_at=now))
    late = post_hook(
        client,
        "whmcs",
        whmcs_envelope(Action.UNSUSPEND, 1001, occurred_at=now - timedelta(minutes=5)),
    )
    assert late.status_code == 200
    assert late.get_json()["status"] == "superseded"
    service = db.scalar(select(Service))
    assert service.desired_state is ServiceState.SUSPENDED
    assert service.generation == 2


def test_late_event_on_another_aspect_still_applies(client, db):
    now = datetime.now(UTC)
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001, occurred_at=now))
    post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001, occurred_at=now))
    late_upgrade = whmcs_envelope(
        Action.CHANGE_PACKAGE, 1001, product=2, occurred_at=now - timedelta(seconds=30)
    )
    # The package was set by the create at `now`, so an older package change is superseded...
    assert post_hook(client, "whmcs", late_upgrade).get_json()["status"] == "superseded"
    # ...but a newer one applies even though the suspend came in between.
    newer = whmcs_envelope(
        Action.CHANGE_PACKAGE, 1001, product=2, occurred_at=now + timedelta(seconds=1)
    )
    assert post_hook(client, "whmcs", newer).get_json()["status"] == "queued"
    service = db.scalar(select(Service))
    assert service.product_id == "2"
    assert service.desired_state is ServiceState.SUSPENDED


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"secret": "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmJ5"}, "signature_mismatch"),
        ({"timestamp": -400}, "timestamp_out_of_tolerance"),
        ({"timestamp": +400}, "timestamp_out_of_tolerance"),
    ],
)
def test_bad_signature_or_stale_timestamp_is_401(client, db, options, reason):
    if "timestamp" in options:  # an offset from now, taken when the test runs
        options = {"timestamp": int(time.time()) + options["timestamp"]}
    response = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001), **options)
    assert response.status_code == 401
    assert response.get_json()["error"] == reason
    assert count_events(db) == 0


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("webhook-signature", "v1R0FSQkFHRQ==", "malformed_signature"),
        ("webhook-signature", "v1,not*base64", "malformed_signature"),
        ("webhook-signature", "v2,R0FSQkFHRQ==", "malformed_signature"),
        ("webhook-timestamp", "1700000000.5", "invalid_timestamp"),
        ("webhook-timestamp", "soon", "invalid_timestamp"),
        ("webhook-timestamp", "-5", "invalid_timestamp"),
        ("webhook-id", "has space", "invalid_webhook_id"),
        ("webhook-signature", "", "missing_signature_headers"),
    ],
)
def test_malformed_signature_headers_are_clean_401s(client, header, value, reason):
    response = post_hook(
        client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001), headers={header: value}
    )
    assert response.status_code == 401
    assert response.get_json() == {"error": reason, "message": response.get_json()["message"]}


def test_no_headers_at_all_is_401(client):
    response = client.post("/hooks/whmcs", json={"event": "SuspendAccount"})
    assert response.status_code == 401
    assert "webhook-id" in response.get_json()["message"]


def test_rotated_secret_still_accepted(client):
    response = post_hook(
        client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001), secret=WHMCS_OLD_SECRET
    )
    assert response.status_code == 202


def test_a_secret_of_another_source_is_refused(client):
    response = post_hook(
        client,
        "blesta",
        blesta_body(Action.SUSPEND, 5),
        secret="whsec_dGVzdC13aG1jcy1zZWNyZXQtb25lLTMyYnl0ZXMh",
    )
    assert response.status_code == 401


def test_unknown_source_is_404(client):
    response = client.post("/hooks/hostbill", data=b"{}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_source"


def test_wrong_content_type_is_415(client):
    response = post_hook(
        client,
        "whmcs",
        whmcs_envelope(Action.SUSPEND, 1001),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (b'{"event": ', 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b'{"a": NaN}', 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_payload"),
        (b'"text"', 422, "invalid_payload"),
        (b"[" * 5000 + b"]" * 5000, 413, "request_entity_too_large"),
    ],
)
def test_bad_bodies_get_clean_errors(client, db, raw, status, error):
    response = post_hook(client, "whmcs", raw=raw)
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert count_events(db) == 0


def test_deeply_nested_json_is_a_clean_400(client, settings):
    raw = b"[" * 2000 + b"]" * 2000  # under the 4096-byte test limit
    response = post_hook(client, "whmcs", raw=raw)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"


def test_schema_errors_are_422_by_field(client, db):
    payload = whmcs_envelope(Action.CREATE, 1001)
    del payload["params"]["pid"]
    payload["params"]["serviceid"] = "abc"
    payload["occurred_at"] = "yesterday"
    response = post_hook(client, "whmcs", payload)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid_payload"
    assert set(body["errors"]["params"]) >= {"pid", "serviceid"}
    assert "occurred_at" in body["errors"]
    assert count_events(db) == 0


def test_unknown_event_name_is_422(client):
    payload = whmcs_envelope(Action.SUSPEND, 1001)
    payload["event"] = "DeleteEverything"
    response = post_hook(client, "whmcs", payload)
    assert response.status_code == 422
    assert "event" in response.get_json()["errors"]


def test_body_over_limit_is_413(client, db):
    payload = whmcs_envelope(Action.SUSPEND, 1001)
    payload["params"]["customfields"] = {"notes": "x" * 5000}
    response = post_hook(client, "whmcs", payload)
    assert response.status_code == 413
    assert count_events(db) == 0


def test_weak_password_is_422_naming_the_rule(client, db):
    response = post_hook(
        client, "whmcs", whmcs_envelope(Action.CREATE, 1001, password="shortpass1")
    )
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "password_policy"
    assert "at least 12 characters" in body["message"]
    assert "uppercase" in body["message"]
    assert body["errors"] == {
        "params.password": ["must be at least 12 characters", "must contain an uppercase letter"]
    }
    assert count_events(db) == 0


def test_blesta_scheduled_cancel_is_stored_as_ignored(client, db):
    payload = blesta_body(Action.TERMINATE, 7)
    payload["vars"]["status"] = "active"
    response = post_hook(client, "blesta", payload)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert db.scalar(select(Event.status)) is EventStatus.IGNORED
    assert db.scalar(select(func.count()).select_from(Service)) == 0


def test_no_traceback_leaks_on_a_storage_failure(client, app, db):
    with runtime(app).engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE attempts")
        conn.exec_driver_sql("ALTER TABLE events RENAME TO events_gone")
    try:
        response = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 1001))
        assert response.status_code in (500, 503)
        body = response.get_json()
        assert "Traceback" not in json.dumps(body)
        assert set(body) == {"error", "message"}
    finally:
        with runtime(app).engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events_gone RENAME TO events")
        from bridge import migrate
        from bridge.models import Attempt

        Attempt.__table__.create(runtime(app).engine)
        assert migrate.current_and_head(runtime(app).engine)[0] is not None
