"""The staff JSON API: bearer tokens, roles, reads, retries, the error shape, OpenAPI."""

from __future__ import annotations

import json
import re

import pytest
import requests
from sqlalchemy import select

from bridge.app import staff_app
from bridge.db import utcnow
from bridge.lifecycle import Action, EventStatus
from bridge.models import AuditEntry, Event, Service
from bridge.support.staff import find_staff, revoke_tokens
from bridge.web import runtime, use_settings
from tests.admin.conftest import OPERATOR, fixed_settings, make_token, send


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def op_token(app, operator) -> str:
    return make_token(app, operator)


@pytest.fixture
def viewer_token(app, viewer) -> str:
    return make_token(app, viewer)


def assert_error(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == reason
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"error", "message", "errors"}
    return body


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer mbst_nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "unknown", "basic"],
)
def test_calls_need_a_staff_token(client, headers):
    response = client.get("/api/events", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="mailbridge"'


def test_me_and_token_use_is_recorded(client, app, op_token, db):
    response = client.get("/api/me", headers=bearer(op_token))
    assert response.get_json() == {"email": OPERATOR, "role": "operator"}
    from bridge.models import StaffToken

    assert db.scalar(select(StaffToken.last_used_at)) is not None
    assert op_token not in json.dumps([t.token_hash for t in db.scalars(select(StaffToken))])


def test_revoked_token_is_refused_at_once(client, app, op_token):
    assert client.get("/api/me", headers=bearer(op_token)).status_code == 200
    with runtime(app).transaction() as session:
        revoke_tokens(session, find_staff(session, OPERATOR), utcnow())
    assert_error(client.get("/api/me", headers=bearer(op_token)), 401, "unauthorized")


def test_list_events_filters_pages_and_counts(client, op_token, sim):
    for service in (1001, 1002, 1003):
        send(client, Action.CREATE, service)
    send(client, Action.CREATE, 1004, product=77)
    response = client.get("/api/events?limit=2", headers=bearer(op_token))
    body = response.get_json()
    assert [e["service_ref"] for e in body["events"]] == ["1004", "1003"]
    assert body["counts"]["applied"] == 3 and body["counts"]["failed"] == 1
    assert body["prev_after"] is None
    second = client.get(
        f"/api/events?limit=2&before={body['next_before']}", headers=bearer(op_token)
    ).get_json()
    assert [e["service_ref"] for e in second["events"]] == ["1002", "1001"]
    assert second["next_before"] is None
    assert second["prev_after"] == second["events"][0]["id"]
    failed = client.get("/api/events?status=failed", headers=bearer(op_token)).get_json()
    (event,) = failed["events"]
    assert (event["status"], event["reason"]) == ("failed", "unmapped_product")
    assert "payload" not in event
    assert client.get("/api/events?service=1002", headers=bearer(op_token)).get_json()["events"][0][
        "service_ref"
    ] == ("1002")


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=nope", "status"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("since=yesterday", "since"),
        ("before=1&after=2", "after"),
        ("color=red", "color"),
        ("since=2026-01-02T00:00Z&until=2026-01-01T00:00Z", "until"),
    ],
)
def test_invalid_queries_are_422_with_the_field(client, op_token, query, field):
    body = assert_error(
        client.get(f"/api/events?{query}", headers=bearer(op_token)), 422, "invalid_request"
    )
    assert field in body["errors"]


def test_event_detail_has_payload_attempts_and_audit(client, op_token, sim):
    answer = send(client, Action.CREATE, 1001)
    body = client.get(f"/api/events/{answer['event_id']}", headers=bearer(op_token)).get_json()
    assert body["status"] == "applied"
    assert body["payload"]["params"]["password"] == "[redacted]"
    (attempt,) = body["attempts"]
    assert attempt["outcome"] == "applied"
    assert [c["method"] for c in attempt["calls"]][-1] == "POST"
    assert set(attempt["calls"][0]) == {"method", "path", "status", "ms", "error"}
    assert body["audit"] == []
    assert_error(client.get("/api/events/424242", headers=bearer(op_token)), 404, "not_found")


def test_viewer_token_reads_but_cannot_act(client, viewer_token, sim, db):
    answer = send(client, Action.CREATE, 1001, product=77)
    headers = bearer(viewer_token)
    assert client.get(f"/api/events/{answer['event_id']}", headers=headers).status_code == 200
    for path in (
        f"/api/events/{answer['event_id']}/retry",
        f"/api/events/{answer['event_id']}/resolve",
        "/api/events/retry",
        f"/api/services/{db.scalar(select(Service.id))}/reconcile",
    ):
        body = assert_error(client.post(path, headers=headers), 403, "forbidden")
        assert "viewer" in body["message"]
    assert db.scalar(select(AuditEntry)) is None


def test_retry_applies_after_the_mapping_is_fixed(client, app, op_token, sim, db, config_tree):
    answer = send(client, Action.CREATE, 1001, product=77)
    url = f"/api/events/{answer['event_id']}/retry"
    queued = client.post(url, json={"apply": False}, headers=bearer(op_token)).get_json()
    assert queued["outcome"] is None and queued["requeued"] == 1
    assert queued["event"]["status"] == "queued"

    use_settings(app, fixed_settings(config_tree, 77, "agency"))
    body = client.post(url, headers=bearer(op_token)).get_json()
    assert body["outcome"]["status"] == "applied"
    assert body["event"]["status"] == "applied"
    assert sim.account("mail1001")["quota_mailboxes"] == 200
    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.via, e.actor) for e in entries] == [("retry", "api", OPERATOR)] * 2
    assert entries[1].detail["outcome"] == "applied"


def test_retry_of_an_event_without_a_service_is_a_conflict(client, op_token, db):
    with runtime(client.application).transaction() as session:
        session.add(
            Event(
                source="blesta",
                webhook_id="w1",
                body_sha256="0" * 64,
                native_event="Services.cancelAfter",
                occurred_at=utcnow(),
                payload={},
                status=EventStatus.IGNORED,
            )
        )
    event_id = db.scalar(select(Event.id))
    body = assert_error(
        client.post(f"/api/events/{event_id}/retry", headers=bearer(op_token)),
        409,
        "nothing_to_retry",
    )
    assert "provisions nothing" in body["message"]


def test_bulk_retry_dry_run_then_for_real(client, op_token, sim, db):
    for service in (1001, 1002):
        send(client, Action.CREATE, service, product=77)
    send(client, Action.CREATE, 1003, product=1)
    url = "/api/events/retry"
    dry = client.post(url, json={"source": "whmcs", "dry_run": True}, headers=bearer(op_token))
    assert dry.get_json() == {"services": 2, "events": 2, "queued": False}
    assert db.scalar(select(AuditEntry)) is None
    real = client.post(url, json={"source": "whmcs"}, headers=bearer(op_token)).get_json()
    assert real == {"services": 2, "events": 2, "queued": True}
    statuses = sorted(e.status.value for e in db.scalars(select(Event)))
    assert statuses == ["applied", "queued", "queued"]
    body = assert_error(
        client.post(url, json={"colour": "red"}, headers=bearer(op_token)), 422, "invalid_request"
    )
    assert "colour" in body["errors"]
    assert_error(
        client.post(url, data="not json", headers={**bearer(op_token), "content-type": "text/x"}),
        415,
        "unsupported_media_type",
    )


def test_resolve_and_its_conflicts(client, op_token, sim, db):
    failed = send(client, Action.CREATE, 1001, product=77)
    applied = send(client, Action.CREATE, 1002)
    url = f"/api/events/{failed['event_id']}/resolve"
    body = client.post(url, json={"note": "refunded"}, headers=bearer(op_token)).get_json()
    assert body["status"] == "failed" and body["resolved_by"] == OPERATOR
    assert_error(client.post(url, headers=bearer(op_token)), 409, "already_resolved")
    assert_error(
        client.post(f"/api/events/{applied['event_id']}/resolve", headers=bearer(op_token)),
        409,
        "not_failed",
    )
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "resolve"))
    assert entry.detail == {"note": "refunded"} and entry.via == "api"


def test_service_with_drift_and_reconcile(client, op_token, sim, db):
    send(client, Action.CREATE, 1001, product=1)
    service_id = db.scalar(select(Service.id))
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    requests.patch(
        f"{sim.url}/api/v1/accounts/mail1001/",
        json={"enabled": 0},
        auth=("admin", token),
        timeout=10,
    ).raise_for_status()
    body = client.get(f"/api/services/{service_id}", headers=bearer(op_token)).get_json()
    assert body["tier"] == "starter" and body["bundle"]["mailboxes"] == 5
    assert body["in_sync"] is False and body["mailserver_error"] is None
    assert body["drift"] == [{"field": "enabled", "desired": True, "actual": False}]
    assert [r["label"] for r in body["rows"] if r["differs"]] == ["state"]
    assert body["steps"] and "unsuspend" in body["steps"][0]
    assert [e["action"] for e in body["events"]] == ["create"]
    outcome = client.post(
        f"/api/services/{service_id}/reconcile", headers=bearer(op_token)
    ).get_json()
    assert outcome["status"] == "applied" and outcome["write_calls"] >= 1
    assert sim.account("mail1001")["enabled"] == 1
    again = client.get(f"/api/services/{service_id}", headers=bearer(op_token)).get_json()
    assert again["in_sync"] is True and again["audit"][0]["action"] == "reconcile"
    assert_error(client.get("/api/services/999999", headers=bearer(op_token)), 404, "not_found")


def test_service_when_the_mail_server_is_down(client, op_token, db):
    send(client, Action.CREATE, 1001)
    service_id = db.scalar(select(Service.id))
    response = client.get(f"/api/services/{service_id}", headers=bearer(op_token))
    assert response.status_code == 200
    body = response.get_json()
    assert body["mailserver_error"]["reason"] == "mailserver_unreachable"
    assert body["in_sync"] is False and body["steps"] == []


def test_mappings(client, app, op_token, sim, config_tree):
    send(client, Action.CREATE, 1001, product=77)
    body = client.get("/api/mappings", headers=bearer(op_token)).get_json()
    assert body["tiers"]["agency"]["aliases"] == "unlimited"
    assert body["products"]["whmcs"]["2"]["tier"] == "business"
    assert body["unmapped"] == [
        {"source": "whmcs", "product_id": "77", "events": 1, "services": 1, "mapped_now": False}
    ]
    use_settings(app, fixed_settings(config_tree, 77, "starter"))
    body = client.get("/api/mappings", headers=bearer(op_token)).get_json()
    assert body["unmapped"][0]["mapped_now"] is True


def test_openapi_document_is_valid_and_lists_every_route(client, app):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.get_data(as_text=True))
    assert doc["openapi"].startswith("3.0") and doc["info"]["title"]
    assert doc["components"]["securitySchemes"]["staffToken"]["scheme"] == "bearer"
    routes: dict[str, set[str]] = {}
    for rule in staff_app(app).url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(
                m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}
            )
    assert set(routes) == set(doc["paths"])
    for path, methods in routes.items():
        assert methods == set(doc["paths"][path]), path

    # every $ref points at something that exists
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    # every operation answers something and has a summary
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op["summary"] and op["responses"], (path, method)
    params = {p["name"] for p in doc["paths"]["/api/events"]["get"]["parameters"]}
    assert {"status", "source", "action", "service", "since", "until", "before"} <= params


def test_services_are_named_by_source_and_billing_id(client, op_token, viewer_token, sim, db):
    send(client, Action.CREATE, 1001)
    send(client, Action.CREATE, 1002)
    internal = db.scalar(select(Service.id).where(Service.service_ref == "1002"))
    assert internal != 1002
    body = client.get("/api/services/whmcs/1002", headers=bearer(op_token)).get_json()
    assert (body["service"], body["service_ref"], body["username"]) == (
        "whmcs:1002",
        "1002",
        "mail1002",
    )
    assert body["links"] == {
        "self": "/api/services/whmcs/1002",
        "reconcile": "/api/services/whmcs/1002/reconcile",
        "link": "/api/services/whmcs/1002/link",
        "console": f"/admin/services/{internal}",
    }
    # the internal id still answers (links, an event's service_id), with the same body
    by_id = client.get(f"/api/services/{internal}", headers=bearer(op_token)).get_json()
    assert by_id["service"] == "whmcs:1002"
    # a billing id where the internal one is expected says how to name a service
    wrong = assert_error(
        client.get("/api/services/1002", headers=bearer(op_token)), 404, "not_found"
    )
    assert "/api/services/whmcs/1002" in wrong["message"]
    unknown = client.get("/api/services/blesta/1002", headers=bearer(op_token))
    assert "no service 1002 from blesta" in assert_error(unknown, 404, "not_found")["message"]

    url = "/api/services/whmcs/1002/reconcile"
    assert_error(client.post(url, headers=bearer(viewer_token)), 403, "forbidden")
    outcome = client.post(url, headers=bearer(op_token)).get_json()
    assert outcome["status"] == "applied"
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "reconcile"))
    assert entry.service_id == internal
    preview = client.post(
        "/api/services/whmcs/1002/link", json={"username": "mail1002"}, headers=bearer(op_token)
    )
    assert preview.status_code == 200, preview.get_data(as_text=True)
    assert (preview.get_json()["label"], preview.get_json()["linked"]) == ("whmcs:1002", False)
