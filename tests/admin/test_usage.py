"""Usage figures in the console, the events filter, the JSON API and the Prometheus gauges."""

from __future__ import annotations

from sqlalchemy import select

from bridge.lifecycle import Action
from bridge.models import Service
from bridge.provisioning import usage as refresher
from bridge.web import runtime
from tests.admin.conftest import make_token, send
from tests.provisioning.conftest import give_domain
from tests.provisioning.test_metrics import scrape, value


def two_services(app, sim, db) -> tuple[int, int]:
    """1001 nearly full (5000 of 5120 MB), 1002 nearly empty (300 MB); usage read."""
    assert send_create(app, sim, 1001) and send_create(app, sim, 1002)
    give_domain(sim, "mail1001", "full.example", [("ann", 3000, 1), ("bob", 2000, 1)])
    give_domain(sim, "mail1002", "roomy.example", [("cy", 300, 1)])
    refresher.refresh(runtime(app))
    ids = [db.scalar(select(Service.id).where(Service.service_ref == r)) for r in ("1001", "1002")]
    return ids[0], ids[1]


def send_create(app, sim, ref: int) -> bool:
    with app.test_client() as client:
        return send(client, Action.CREATE, ref)["status"] == "applied"


def test_service_page_shows_usage_with_its_read_time(app, as_viewer, sim, db):
    full, _ = two_services(app, sim, db)
    page = as_viewer.get(f"/admin/services/{full}").get_data(as_text=True)
    assert "<h2>Usage</h2>" in page
    assert "5000 of 5120 (97%)" in page
    assert "2 of 5" in page  # mailboxes
    assert "As the mail server reported for <code>mail1001</code> at 20" in page


def test_service_page_before_the_first_read(app, as_viewer, sim, db):
    assert send_create(app, sim, 1003)
    service = db.scalar(select(Service.id).where(Service.service_ref == "1003"))
    page = as_viewer.get(f"/admin/services/{service}").get_data(as_text=True)
    assert "Not read yet: the worker reads usage every 6 h" in page


def test_events_filter_over_90_percent_of_storage(app, as_viewer, sim, db):
    two_services(app, sim, db)
    page = as_viewer.get("/admin/events?storage_full=1").get_data(as_text=True)
    assert 'name="storage_full" value="1" checked' in page
    assert ">1001<" in page and ">1002<" not in page
    everything = as_viewer.get("/admin/events").get_data(as_text=True)
    assert ">1001<" in everything and ">1002<" in everything


def test_api_service_detail_has_a_usage_object(app, client, operator, sim, db):
    full, _ = two_services(app, sim, db)
    token = make_token(app, operator)
    headers = {"Authorization": f"Bearer {token}"}
    body = client.get(f"/api/services/{full}", headers=headers).get_json()
    figures = body["usage"]
    assert figures["username"] == "mail1001"
    assert (figures["storage_used_mb"], figures["storage_total_mb"]) == (5000, 5120)
    assert figures["storage_percent"] == 97
    assert (figures["mailboxes_used"], figures["mailboxes_limit"]) == (2, 5)
    assert figures["read_at"].endswith("+00:00")
    events = client.get("/api/events?storage_full=true", headers=headers).get_json()
    assert {e["service_ref"] for e in events["events"]} == {"1001"}
    assert send_create(app, sim, 1004)
    fresh = db.scalar(select(Service.id).where(Service.service_ref == "1004"))
    assert client.get(f"/api/services/{fresh}", headers=headers).get_json()["usage"] is None
    doc = client.get("/api/openapi.json").get_json()
    assert "storage_percent" in doc["components"]["schemas"]["Usage"]["properties"]
    assert "usage" in doc["components"]["schemas"]["Service"]["properties"]


def test_prometheus_gauges_are_totals(app, client, sim, db):
    two_services(app, sim, db)
    text = client.get("/metrics").get_data(as_text=True)
    samples = scrape(text)
    assert value(samples, "bridge_usage_services") == 2
    assert value(samples, "bridge_usage_storage_used_mb") == 5300
    assert value(samples, "bridge_usage_storage_total_mb") == 10240
    assert value(samples, "bridge_usage_mailboxes_used") == 3
    assert value(samples, "bridge_usage_domains_used") == 2
    assert value(samples, "bridge_usage_storage_full_services") == 1
    assert value(samples, "bridge_usage_oldest_read_seconds") < 3600
    usage_lines = [line for line in text.splitlines() if line.startswith("bridge_usage_")]
    assert usage_lines and all("{" not in line for line in usage_lines)  # no per-service labels
