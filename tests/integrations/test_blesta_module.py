"""The Blesta module (and its small plugin), run by real PHP against a live bridge and nmsim."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from bridge.config import parse_settings
from bridge.lifecycle import EventStatus
from bridge.models import Event, Service, Usage
from bridge.signature import verify
from bridge.web import use_settings
from tests.conftest import BLESTA_SECRET
from tests.integrations.conftest import INTEGRATIONS

COMPLIANT_16 = re.compile(r"^(?=.*[A-Z])(?=.*[a-z])(?=.*[0-9])[A-HJ-NP-Za-km-np-z2-9]{16}$")
MODULE = INTEGRATIONS / "blesta" / "components" / "modules" / "mail_bridge"


def _active(blesta, sid=215, package=1, plan="", **order):
    blesta.package(package, plan=plan)
    assert blesta.order(sid, package=package, **order) is None
    assert blesta.activate(sid) is None


def _messages(errors) -> str:
    """Blesta's Input errors ({field: {rule: message}}) as text: field names and messages."""
    if isinstance(errors, dict):
        return " ".join(f"{key} {_messages(value)}" for key, value in errors.items())
    return "" if errors is None else str(errors)


def test_module_layout_tabs_and_email_tags(blesta):
    config = json.loads((MODULE / "config.json").read_text())
    assert config["service"]["name_key"] == "mailbridge_username"
    assert (MODULE / "language" / "en_us" / "mail_bridge.php").is_file()
    tabs, _ = blesta.call("getAdminTabs", {"object": {}})
    assert tabs == {"tabMailBridge": "Mail Bridge"}
    tabs, _ = blesta.call("getClientTabs", {"object": {}})
    assert tabs == {"tabClientMailBridge": "Mail account"}
    tags, _ = blesta.call("getEmailTags")
    assert "mailbridge_password" in tags["service"] and "mailbridge_webmail_url" in tags["service"]
    assert tags["module"] == ["label"]  # never the secret
    # the plugin is only the client-move listener now
    plugin = INTEGRATIONS / "blesta" / "plugins" / "mail_bridge"
    assert sorted(p.name for p in plugin.iterdir()) == [
        "config.json",
        "language",
        "mail_bridge_plugin.php",
    ]


def test_module_row_is_checked_against_the_bridge_and_the_secret_kept_encrypted(blesta, sim):
    good = {"label": "", "bridge_url": blesta.row["meta"]["bridge_url"], "source": "blesta"}
    meta, errors = blesta.call("addModuleRow", {"value": {**good, "secret": BLESTA_SECRET}})
    assert errors is None
    assert {m["key"]: (m["value"], m["encrypted"]) for m in meta} == {
        "label": ("127.0.0.1", 0),
        "bridge_url": (good["bridge_url"], 0),
        "source": ("blesta", 0),
        "secret": (BLESTA_SECRET, 1),
    }
    _, errors = blesta.call("addModuleRow", {"value": {**good, "secret": "not-a-secret"}})
    assert "whsec_" in _messages(errors)
    wrong = "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmI="
    _, errors = blesta.call("addModuleRow", {"value": {**good, "secret": wrong}})
    assert "HTTP 401" in _messages(errors) and wrong not in _messages(errors)
    _, errors = blesta.call(
        "addModuleRow", {"value": {**good, "bridge_url": "http://bridge.example.org"}}
    )
    assert "https" in _messages(errors)
    gone = {**good, "bridge_url": "http://127.0.0.1:9", "secret": BLESTA_SECRET}
    _, errors = blesta.call("addModuleRow", {"value": gone})
    assert "unreachable" in _messages(errors)

    # editing with an empty secret keeps the stored one; the form never shows it
    meta, errors = blesta.call(
        "editModuleRow", {"row": 1}, {"value": {**good, "label": "Main", "secret": ""}}
    )
    assert errors is None and {m["key"]: m["value"] for m in meta}["secret"] == BLESTA_SECRET
    page, _ = blesta.call("manageEditRow", {"row": 1}, {"value": {}})
    assert BLESTA_SECRET not in page and 'name="_csrf_token"' in page
    page, _ = blesta.call("manageAddRow", {"value": {}})
    assert 'name="bridge_url"' in page and 'type="password" name="secret"' in page
    assert BLESTA_SECRET not in json.dumps(blesta.module_log())


def test_package_tier_is_a_dropdown_from_the_bridge(blesta, sim):
    form, _ = blesta.call("getPackageFields", {"object": {"module_row": 1, "meta": {}}})
    (plan, moves) = form["fields"]
    select_ = plan["fields"][0]
    assert select_["name"] == "meta[plan]"
    assert list(select_["options"]) == ["", "starter", "business", "agency"]
    assert "5 mailboxes" in select_["options"]["starter"]
    assert moves["fields"][0]["name"] == "meta[report_moves]"

    stale, _ = blesta.call("getPackageFields", {"object": {"meta": {"plan": "gold"}}})
    options = stale["fields"][0]["fields"][0]["options"]
    assert "NOT a tier of the bridge" in options["gold"]

    _, errors = blesta.call("addPackage", {"value": {"module_row": 1, "meta": {"plan": "gold"}}})
    assert '"gold" is not a tier of the bridge (its tiers: starter, business, agency)' in (
        _messages(errors)
    )
    meta, errors = blesta.call(
        "addPackage",
        {"value": {"module_row": 1, "meta": {"plan": "business", "report_moves": "1"}}},
    )
    assert errors is None
    assert {m["key"]: m["value"] for m in meta} == {"plan": "business", "report_moves": "1"}

    sim.fault(kind="down")  # the bridge answers, the mail server does not: tiers still read
    form, _ = blesta.call("getPackageFields", {"object": {"meta": {}}})
    assert "starter" in form["fields"][0]["fields"][0]["options"]


def test_order_fields_are_checked_and_a_compliant_password_generated(blesta, sim):
    blesta.package(1)
    bad = blesta.order(username="X", domain="not a domain", password="short")
    text = _messages(bad)
    assert "mailbridge_username" in text and "mailbridge_domain" in text
    assert "at least 12 characters" in text
    assert blesta.order() is None
    service = blesta.service()
    password = next(f for f in service["fields"] if f["key"] == "mailbridge_password")
    assert COMPLIANT_16.match(password["value"]) and password["encrypted"] == 1
    assert blesta.module_log() == []  # an order sends nothing
    assert sim.account("blesta215") is None


def test_activation_and_every_lifecycle_step_reach_the_mail_server(blesta, sim, db):
    _active(blesta)
    account = sim.account("blesta215")
    assert account["perm_level"] == "DomainAdmin" and account["enabled"] == 1
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (5, 5120)
    assert account["recovery_email"] == "robin31@example.com"
    fields = blesta.fields()
    assert fields["mailbridge_owner"] == "31"
    assert fields["mailbridge_mail_hostname"] == "mail.example.net"  # welcome e-mail tags
    assert fields["mailbridge_webmail_url"] == "https://mail.example.net/webmail/"
    assert blesta.last_call()["ok"] is True

    blesta.update(215, suspension_reason="Overdue")
    assert blesta.act("suspendService", status="suspended") is None
    assert sim.account("blesta215")["enabled"] == 0
    assert blesta.act("unsuspendService", status="active") is None
    assert sim.account("blesta215")["enabled"] == 1

    edit = {"configoptions": {"extra_mailboxes": "2"}, "use_module": "true"}
    assert blesta.act("editService", 215, None, {"value": edit}) is None
    account = sim.account("blesta215")
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (7, 5120 + 2048)
    blesta.update(
        215,
        options=[{"option_name": "extra_mailboxes", "option_type": "quantity", "qty": 2}],
    )

    before = sim.account("blesta215")["password_hash"]
    weak = {"mailbridge_password": "weakpass", "use_module": "true"}
    assert "at least 12 characters" in _messages(
        blesta.act("editService", 215, None, {"value": weak})
    )
    strong = {"mailbridge_password": "Blesta-New-Passw0rd", "use_module": "true"}
    assert blesta.act("editService", 215, None, {"value": strong}) is None
    assert sim.account("blesta215")["password_hash"] != before
    assert blesta.fields()["mailbridge_password"] == "Blesta-New-Passw0rd"
    renamed = {"mailbridge_username": "other", "use_module": "true"}
    assert "cannot be changed" in _messages(
        blesta.act("editService", 215, None, {"value": renamed})
    )

    blesta.package(2, plan="business")
    _, errors = blesta.call(
        "changeServicePackage", {"package": 1}, {"package": 2}, {"service": 215}
    )
    assert errors is None
    assert sim.account("blesta215")["quota_mailboxes"] == 25 + 2
    blesta.update(215, package_id=2, pricing_id=102, package=blesta.load()["packages"]["2"])

    assert blesta.act("renewService") is None
    assert blesta.act("cancelService", status="canceled") is None
    assert sim.account("blesta215")["enabled"] == 0  # disabled now, deleted after grace days

    actions = [e.action for e in db.scalars(select(Event).order_by(Event.id))]
    assert actions == [
        "create",
        "suspend",
        "unsuspend",
        "change_package",
        "change_password",
        "change_package",
        "renew",
        "terminate",
    ]
    assert all(e.status is EventStatus.APPLIED for e in db.scalars(select(Event)))
    assert blesta.service()["status"] == "canceled"


def test_only_the_clients_name_company_and_email_leave_blesta(blesta, sim, db):
    _active(blesta, password="Chosen-Passw0rd-1")
    assert blesta.act("suspendService", status="suspended") is None
    for body in blesta.sent():
        assert set(body["client"]) == {"id", "first_name", "last_name", "company", "email"}
        assert [f["key"] for f in body["service"]["fields"]] == [
            "mailbridge_username",
            "mailbridge_domain",
        ]
    text = json.dumps(blesta.module_log())
    for private in ("5 Example Road", "+49.301234567", "DE123456789", "Chosen-Passw0rd-1"):
        assert private not in text
    assert BLESTA_SECRET not in text and BLESTA_SECRET.removeprefix("whsec_") not in text
    (create,) = blesta.sent("Services.addAfter")
    assert create["vars"]["password"] == "***"  # masked in Blesta's module log
    for event in db.scalars(select(Event)):
        assert "5 Example Road" not in json.dumps(event.payload)


def test_a_failed_activation_leaves_the_service_pending_with_the_reason(
    app, blesta, sim, db, config_tree
):
    blesta.package(9)  # no tier and no product mapping on the bridge
    assert blesta.order(package=9) is None
    errors = blesta.activate()
    text = _messages(errors)
    assert "Mail Bridge: unmapped_product: " in text and "(bridge event " in text
    assert blesta.service()["status"] == "pending"
    assert sim.account("blesta215") is None
    first = blesta.last_call()
    assert first["ok"] is False and first["event"] == "Services.addAfter"

    # staff add the mapping on the bridge, then press Activate again: the same delivery
    config_tree["products"]["blesta"][9] = "starter"
    use_settings(app, parse_settings(config_tree, {}))
    assert blesta.activate() is None
    assert blesta.service()["status"] == "active"
    retried = blesta.last_call()
    assert (retried["id"], retried["at"], retried["ok"]) == (first["id"], first["at"], True)
    (event,) = db.scalars(select(Event)).all()
    assert event.webhook_id == first["id"] and event.status is EventStatus.APPLIED
    assert sim.account("blesta215")["quota_mailboxes"] == 5


def test_a_service_added_directly_as_active_is_refused_with_the_way_round(blesta, sim):
    blesta.package(1)
    blesta.client(31)
    vars_ = {
        "client_id": 31,
        "pricing_id": 101,
        "status": "active",
        "use_module": "true",
        "mailbridge_username": "direct1",
        "mailbridge_domain": "direct.example.com",
    }
    _, errors = blesta.call("addService", {"package": 1}, {"value": vars_})
    assert "Add the service as Pending, then Activate it" in _messages(errors)
    assert blesta.module_log() == [] and sim.account("direct1") is None


def test_admin_tab_shows_state_and_retries_what_did_not_apply(blesta, sim, work):
    _active(blesta)
    sim.fault(kind="down")
    errors = blesta.act("suspendService", status="suspended")
    assert "queued on the bridge" in _messages(errors)
    assert blesta.service()["status"] == "active"  # Blesta did not suspend it
    queued = blesta.last_call()
    tab, _ = blesta.call(
        "tabMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "Services.suspendAfter" in tab and "not applied" in tab
    assert 'name="mailbridge_retry"' in tab and 'name="_csrf_token"' in tab
    assert "/admin/events?source=blesta&amp;service=215" in tab

    sim.clear_faults()
    assert [o.status for o in work(now=datetime.now(UTC) + timedelta(minutes=10))] == ["applied"]
    tab, _ = blesta.call(
        "tabMailBridge",
        {"package": 1},
        {"service": 215},
        {"value": {}},
        {"value": {"mailbridge_retry": "1"}},
    )
    assert "Sent again: applied" in tab
    assert blesta.last_call()["id"] == queued["id"] and blesta.last_call()["ok"] is True
    assert "<strong>suspended</strong>" in tab and 'name="mailbridge_retry"' not in tab
    assert sim.account("blesta215")["enabled"] == 0


def test_admin_tab_reports_a_stale_tier_and_survives_a_bridge_outage(blesta, sim):
    _active(blesta, plan="starter")
    data = blesta.load()
    data["packages"]["1"]["meta"]["plan"] = "gold"  # the bridge's config lost that tier
    blesta.save(data)
    tab, _ = blesta.call(
        "tabMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "&quot;gold&quot; is not a tier of the bridge" in tab
    gone = blesta.row | {"meta": {**blesta.row["meta"], "bridge_url": "http://127.0.0.1:9"}}
    data["rows"]["1"] = gone
    blesta.save(data)
    tab, _ = blesta.call(
        "tabMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "the bridge is unreachable" in tab
    client, _ = blesta.call(
        "tabClientMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "Mail account details are unavailable right now" in client


def test_client_tab_shows_setup_records_and_usage(blesta, sim, db):
    blesta.package(1)
    assert blesta.order() is None
    tab, _ = blesta.call(
        "tabClientMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "Your mail account is being set up." in tab
    assert blesta.activate() is None
    tab, _ = blesta.call(
        "tabClientMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "mx1.example.net" in tab and "v=spf1 include:example.net -all" in tab
    assert "Not read yet." in tab

    service = db.scalar(
        select(Service).where(Service.source == "blesta", Service.service_ref == "215")
    )
    db.add(
        Usage(
            service_id=service.id,
            username="blesta215",
            storage_used_mb=700,
            storage_total_mb=5120,
            mailboxes_used=2,
            mailboxes_limit=5,
            domains_used=1,
            domains_limit=1,
            aliases_used=3,
            aliases_limit=10,
            read_at=datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
        )
    )
    db.commit()
    # another service whose id sorts between "214" and "215" as text must not be taken
    blesta.package(1)
    assert blesta.order(2140, username="blesta2140") is None
    assert blesta.activate(2140) is None
    tab, _ = blesta.call(
        "tabClientMailBridge", {"package": 1}, {"service": 215}, {"value": {}}, {"value": {}}
    )
    assert "700 MB / 5120 MB" in tab and "2 / 5" in tab
    assert "2026-12-01T06:00:00+00:00" in tab


def test_the_plugin_reports_a_move_for_opted_in_packages_only(blesta, sim):
    _active(blesta)
    blesta.client(44)
    blesta.update(215, client_id=44)
    event = {
        "name": "Services.editAfter",
        "params": {"service_id": 215, "vars": {"client_id": 44}, "old_service": {"client_id": 31}},
    }
    events = blesta.run({"mode": "blesta_plugin", "event": event})
    assert events == [{"event": "Services.editAfter", "callback": ["this", "onServiceEdited"]}]
    assert sim.account("blesta215")["recovery_email"] == "robin31@example.com"  # not opted in

    data = blesta.load()
    data["services"]["215"]["package"]["meta"]["report_moves"] = "1"
    blesta.save(data)
    blesta.run({"mode": "blesta_plugin", "event": event})
    assert sim.account("blesta215")["recovery_email"] == "robin44@example.com"
    assert blesta.fields()["mailbridge_owner"] == "44"
    (move,) = blesta.sent("Services.editAfter")
    assert move["old_service"]["client_id"] == 31 and move["vars"] == {"client_id": 44}


def test_an_unreported_move_is_reported_before_the_next_action(blesta, sim):
    _active(blesta)
    blesta.client(44)
    blesta.update(215, client_id=44)  # moved with no plugin
    assert blesta.act("suspendService", status="suspended") is None
    account = sim.account("blesta215")
    assert account["recovery_email"] == "robin44@example.com" and account["enabled"] == 0
    assert [b["event"] for b in blesta.sent()] == [
        "Services.addAfter",
        "Services.editAfter",
        "Services.suspendAfter",
    ]
    assert blesta.fields()["mailbridge_owner"] == "44"


def test_what_the_module_sends_is_signed_for_the_blesta_adapter(blesta):
    """Captured at a stand-in endpoint: a Standard Webhooks signature over the exact body."""
    seen: list[tuple[dict, bytes]] = []

    @Request.application
    def capture(request: Request) -> Response:
        seen.append((dict(request.headers), request.get_data()))
        return Response('{"status": "applied", "event_id": 1}', 200, mimetype="application/json")

    server = make_server("127.0.0.1", 0, capture, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        data = blesta.load()
        data["rows"]["1"]["meta"]["bridge_url"] = f"http://127.0.0.1:{server.server_port}"
        blesta.save(data)
        blesta.package(1, plan="starter")
        assert blesta.order() is None
        assert blesta.activate() is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    headers, body = next((h, b) for h, b in seen if b.startswith(b'{"client"'))
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
    sent = json.loads(body)
    assert sent["event"] == "Services.addAfter" and sent["service_id"] == 215
    assert sent["vars"]["status"] == "active" and COMPLIANT_16.match(sent["vars"]["password"])
    assert sent["service"]["package"]["meta"] == {"plan": "starter"}
    assert sent["occurred_at"].endswith("+00:00")
