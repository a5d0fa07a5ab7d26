"""The Blesta plugin, run by real PHP against a live bridge and the NMS simulator."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from bridge.lifecycle import EventStatus
from bridge.models import Event
from bridge.signature import verify
from tests.conftest import BLESTA_SECRET


def _created(blesta, sim, service=215, package=1):
    blesta.add(service, package=package)
    blesta.event(
        "Services.addAfter",
        service,
        vars={"status": "active", "client_id": 31, "pricing_id": 100 + package},
    )
    return sim.account(f"blesta{service}")


def test_plugin_registers_its_events_and_cron_task(blesta):
    events = blesta.run(blesta.scenario("blesta_static"))
    assert [e["event"] for e in events] == [
        "Services.addAfter",
        "Services.editAfter",
        "Services.suspendAfter",
        "Services.unsuspendAfter",
        "Services.cancelAfter",
        "Services.renewAfter",
    ]
    assert {tuple(e["callback"]) for e in events} == {("this", "onServiceEvent")}
    cron = blesta.read("cron.json", [])
    assert cron[0]["add"]["key"] == "retry_outbox" and cron[1]["vars"]["interval"] == 5


def test_service_lifecycle_reaches_the_mail_server(blesta, sim, db):
    account = _created(blesta, sim)
    assert account["perm_level"] == "DomainAdmin" and account["enabled"] == 1
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (5, 5120)
    assert account["recovery_email"] == "robin31@example.com"

    active = dict(blesta.services["215"])
    blesta.services["215"]["status"] = "suspended"
    blesta.event(
        "Services.suspendAfter",
        vars={"use_module": "true", "status": "suspended", "suspension_reason": "Overdue"},
        old_service=active,
    )
    assert sim.account("blesta215")["enabled"] == 0

    blesta.services["215"]["status"] = "active"
    blesta.event("Services.unsuspendAfter", vars={"status": "active"}, old_service=active)
    assert sim.account("blesta215")["enabled"] == 1

    blesta.services["215"]["options"] = [
        {"option_id": 9, "option_name": "extra_mailboxes", "option_type": "quantity", "qty": 2}
    ]
    blesta.event(
        "Services.editAfter",
        vars={"pricing_id": 101, "configoptions": {"extra_mailboxes": 2}},
        old_service=active,
    )
    account = sim.account("blesta215")
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (7, 5120 + 2048)

    blesta.event("Services.renewAfter", vars={}, old_service=active)
    blesta.services["215"]["status"] = "canceled"
    blesta.event(
        "Services.cancelAfter",
        vars={"status": "canceled", "date_canceled": "2025-03-04 10:15:02"},
        old_service=active,
    )
    assert sim.account("blesta215")["enabled"] == 0
    statuses = [e.status for e in db.scalars(select(Event).order_by(Event.id))]
    assert statuses == [EventStatus.APPLIED] * 6
    assert "Services.cancelAfter service #215 msg_" in blesta.log()


def test_scheduled_cancel_is_not_a_termination(blesta, sim):
    _created(blesta, sim)
    blesta.event(
        "Services.cancelAfter",
        vars={"date_canceled": "2030-01-01 00:00:00"},
        old_service=blesta.services["215"],
    )
    assert sim.account("blesta215")["enabled"] == 1
    assert "HTTP 200: ignored" in blesta.log()


def test_password_changes(blesta, sim, db):
    before = _created(blesta, sim)["password_hash"]
    status = blesta.run(
        blesta.scenario("blesta_password", service_id=215, password="Blesta-New-Passw0rd")
    )
    assert status == "applied"
    changed = sim.account("blesta215")["password_hash"]
    assert changed != before

    # a service field named mailbridge_password in an edit is sent as a password change only
    blesta.event(
        "Services.editAfter",
        vars={"mailbridge_password": "Edited-Passw0rd-77", "configoptions": {}},
        old_service=blesta.services["215"],
    )
    assert sim.account("blesta215")["password_hash"] != changed
    edit = db.scalars(select(Event).where(Event.native_event == "Services.editAfter")).one()
    assert "mailbridge_password" not in edit.payload["vars"]
    assert "Edited-Passw0rd-77" not in blesta.log()


def test_moving_a_service_to_another_client(blesta, sim):
    _created(blesta, sim)
    old = dict(blesta.services["215"])
    blesta.add(215, client=44)
    blesta.event("Services.editAfter", vars={"client_id": 44}, old_service=old)
    assert sim.account("blesta215")["recovery_email"] == "robin44@example.com"


def test_other_packages_are_left_alone(blesta, sim):
    blesta.settings["package_ids"] = [2]
    _created(blesta, sim, package=1)
    assert sim.account("blesta215") is None
    assert blesta.log() == ""


def test_unreachable_bridge_keeps_events_in_order_for_the_cron_task(blesta, sim, bridge_url):
    _created(blesta, sim)
    blesta.settings["url"] = "http://127.0.0.1:9/hooks/blesta"
    active = dict(blesta.services["215"])
    blesta.services["215"]["status"] = "suspended"
    blesta.event("Services.suspendAfter", vars={"status": "suspended"}, old_service=active)
    blesta.services["215"]["status"] = "active"
    blesta.event("Services.unsuspendAfter", vars={"status": "active"}, old_service=active)
    queued = blesta.outbox()
    assert len(queued) == 2
    assert [json.loads(p.read_text())["event"] for p in queued] == [
        "Services.suspendAfter",
        "Services.unsuspendAfter",
    ]
    assert "kept in the outbox" in blesta.log()

    blesta.settings["url"] = f"{bridge_url}/hooks/blesta"
    blesta.run(blesta.scenario("blesta_cron"))
    assert blesta.outbox() == []
    assert sim.account("blesta215")["enabled"] == 1  # suspend, then unsuspend: in order
    assert blesta.log().count("(outbox): HTTP 200: applied") == 2


def test_what_the_plugin_sends(blesta):
    """Captured at a stand-in endpoint: signed, compact, no secrets, re-read service."""
    seen: list[tuple[dict, bytes]] = []

    @Request.application
    def capture(request: Request) -> Response:
        seen.append((dict(request.headers), request.get_data()))
        return Response('{"status": "applied", "event_id": 1}', 200, mimetype="application/json")

    server = make_server("127.0.0.1", 0, capture, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        blesta.settings["url"] = f"http://127.0.0.1:{server.server_port}/hooks/blesta"
        blesta.add(215)
        blesta.event(
            "Services.suspendAfter",
            vars={"status": "suspended", "password": "typed-by-staff"},
            old_service=blesta.services["215"],
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    ((headers, body),) = seen
    lower = {k.lower(): v for k, v in headers.items()}
    verify(
        [BLESTA_SECRET],
        lower["webhook-id"],
        lower["webhook-timestamp"],
        lower["webhook-signature"],
        body,
        now=time.time(),
        tolerance_s=300,
    )
    data = json.loads(body)
    assert data["event"] == "Services.suspendAfter" and data["service_id"] == 215
    assert data["occurred_at"].endswith("+00:00")
    assert data["service"]["package"] == {
        "id": 1,
        "name": "Mail 1",
        "module_id": 5,
        "meta": {"plan": ""},
    }
    assert data["client"]["email"] == "robin31@example.com"
    assert "settings" not in data["client"]
    text = body.decode()
    for secret in ("s3cr3t-module-value", "package-secret", "typed-by-staff", "email_content"):
        assert secret not in text
