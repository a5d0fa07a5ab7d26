"""The signed read-only connector endpoints for billing modules: tiers and usage pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.lifecycle import Action
from bridge.models import Service, Usage
from tests.builders import post_hook, signed_headers


def signed_get(client: Any, source: str, path: str, signer: str | None = None, **sign: Any) -> Any:
    """A GET signed like a hook over its empty body (no content type needed)."""
    headers = signed_headers(signer or source, b"", **sign)
    del headers["content-type"]
    return client.get(f"/hooks/{source}/{path}", headers=headers)


def test_tiers_lists_bundles_and_the_sources_addons(client, sim):
    response = signed_get(client, "whmcs", "tiers")
    assert response.status_code == 200
    body = response.get_json()
    assert [t["key"] for t in body["tiers"]] == ["starter", "business", "agency"]
    assert body["tiers"][0] == {
        "key": "starter",
        "label": "starter",
        "bundle": {
            "domains": 1,
            "domain_aliases": 1,
            "aliases": 10,
            "mailboxes": 5,
            "storage_mb": 5120,
        },
    }
    assert body["tiers"][2]["bundle"]["aliases"] == "unlimited"
    assert body["addons"] == [
        {
            "key": "extra_mailboxes",
            "label": "extra_mailboxes",
            "adds": {
                "domains": 0,
                "domain_aliases": 0,
                "aliases": 0,
                "mailboxes": 1,
                "storage_mb": 1024,
            },
        },
        {
            "key": "extra_storage_gb",
            "label": "extra_storage_gb",
            "adds": {
                "domains": 0,
                "domain_aliases": 0,
                "aliases": 0,
                "mailboxes": 0,
                "storage_mb": 1024,
            },
        },
    ]
    assert body["products"] == {"1": "starter", "2": "business", "3": "agency"}
    blesta = signed_get(client, "blesta", "tiers").get_json()
    assert [a["key"] for a in blesta["addons"]] == ["extra_mailboxes"]


@pytest.mark.parametrize("path", ["tiers", "usage"])
def test_connector_reads_need_a_valid_signature(client, sim, path):
    assert client.get(f"/hooks/whmcs/{path}").status_code == 401
    wrong = signed_get(client, "whmcs", path, secret="whsec_" + "QUFB" * 8)
    assert wrong.status_code == 401
    assert wrong.get_json()["error"]
    stale = signed_get(client, "whmcs", path, timestamp=1_000_000)
    assert stale.status_code == 401
    assert signed_get(client, "nosuch", path, signer="whmcs").status_code == 404
    assert signed_get(client, "whmcs", path, signer="blesta").status_code == 401


def _services(client, refs):
    for ref in refs:
        response = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, ref, product=1))
        assert response.get_json()["status"] == "applied"


def test_usage_pages_a_sources_services_by_billing_id(client, sim, db):
    _services(client, [1001, 1002, 1003])
    post_hook(client, "blesta", blesta_body(Action.CREATE, 7))
    first = db.scalar(select(Service).where(Service.service_ref == "1001"))
    read_at = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    db.add(
        Usage(
            service_id=first.id,
            username="mail1001",
            storage_used_mb=700,
            storage_total_mb=5120,
            mailboxes_used=2,
            mailboxes_limit=5,
            domains_used=1,
            domains_limit=1,
            aliases_used=3,
            aliases_limit=10,
            read_at=read_at,
        )
    )
    db.commit()

    page = signed_get(client, "whmcs", "usage?limit=2").get_json()
    assert [s["service_id"] for s in page["services"]] == ["1001", "1002"]
    assert page["next"] == "1002"
    assert page["services"][0] == {
        "service_id": "1001",
        "username": "mail1001",
        "tier": "starter",
        "state": "active",
        "storage_used_mb": 700,
        "storage_limit_mb": 5120,
        "mailboxes_used": 2,
        "mailboxes_limit": 5,
        "domains_used": 1,
        "aliases_used": 3,
        "read_at": "2026-12-01T06:00:00+00:00",
    }
    unread = page["services"][1]
    assert unread["read_at"] is None and unread["storage_used_mb"] is None
    last = signed_get(client, "whmcs", "usage?after=1002").get_json()
    assert [s["service_id"] for s in last["services"]] == ["1003"]
    assert last["next"] is None
    everything = signed_get(client, "whmcs", "usage").get_json()
    assert len(everything["services"]) == 3 and everything["next"] is None
    blesta = signed_get(client, "blesta", "usage").get_json()
    assert [s["service_id"] for s in blesta["services"]] == ["7"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("after=", "after"),
        ("page=2", "page"),
    ],
)
def test_usage_refuses_bad_parameters(client, sim, query, field):
    response = signed_get(client, "whmcs", f"usage?{query}")
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert field in body["errors"]
    assert "limit 1 to 500" in body["message"]
