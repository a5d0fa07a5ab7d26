"""The connector endpoints billing modules call besides hooks: status and service info."""

from __future__ import annotations

import json

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from tests.builders import post_hook, signed_headers


def _post(client, path, payload):
    body = json.dumps(payload).encode()
    return client.post(f"/hooks/whmcs/{path}", data=body, headers=signed_headers("whmcs", body))


def test_status_reports_a_reachable_mail_server(client, sim):
    response = _post(client, "status", {})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["mailserver"]["reachable"] is True


def test_status_says_when_the_mail_server_is_down(client, sim):
    sim.fault(kind="down")
    response = _post(client, "status", {})
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] in ("mailserver_unavailable", "circuit_open")
    assert "cannot use the mail server" in body["message"]


def test_status_needs_a_signature(client, sim):
    response = client.post("/hooks/whmcs/status", json={})
    assert response.status_code == 401


def test_service_info_shows_state_bundle_and_setup(client, sim, config_tree):
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001, product=2))
    response = _post(client, "service", {"service": 1001})
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "mail1001"
    assert body["state"] == "active" and body["in_sync"] is True
    assert body["bundle"]["mailboxes"] == 25
    assert body["last_event"]["status"] == "applied"
    assert set(body["setup"]) >= {"mail_hostname", "webmail_url", "mx", "spf"}


def test_service_info_for_an_unknown_service_is_404(client, sim):
    response = _post(client, "service", {"service": 4242})
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_service"


def test_service_info_needs_the_service_id(client, sim):
    response = _post(client, "service", {"svc": 1})
    assert response.status_code == 422
    assert "service" in response.get_json()["errors"]
