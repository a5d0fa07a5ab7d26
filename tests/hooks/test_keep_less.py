"""Keep less: a customer's password hash is erased once applied, and a custom field the
adapters do not read never reaches the database. Each check reads every text and JSON
column of every table, through the real app and the NMS simulator over HTTP.
"""

from __future__ import annotations

import json

from sqlalchemy import JSON, String, Text, select

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.db import Base
from bridge.lifecycle import Action
from bridge.models import Service
from bridge.passwords import HASH_PREFIX
from tests.builders import post_hook
from tests.provisioning import conftest as provisioning

# The simulator fixtures of tests/provisioning, in scope here under their own names.
sim_server, sim, config_tree = provisioning.sim_server, provisioning.sim, provisioning.config_tree

PASSWORD = "Keep-Less-Passw0rd-1"
NEW_PASSWORD = "Keep-Less-Passw0rd-2"


def stored_text(db) -> str:
    """Every text and JSON value of every table, as one string."""
    values = []
    for table in Base.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
        for row in db.execute(select(*columns)):
            values.extend(v if isinstance(v, str) else json.dumps(v) for v in row if v)
    return "\n".join(values)


def test_the_password_hash_is_erased_once_applied(client, db, sim):
    created = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 301, password=PASSWORD))
    assert created.get_json()["status"] == "applied"
    sent = sim.account("mail301")["password_hash"]
    assert sent.startswith(HASH_PREFIX)
    service = db.scalar(select(Service))
    assert (service.password_hash, service.password_pending) == (None, False)
    everything = stored_text(db)
    assert HASH_PREFIX not in everything and "$6$" not in everything
    assert PASSWORD not in everything

    change = whmcs_envelope(Action.CHANGE_PASSWORD, 301, password=NEW_PASSWORD)
    assert post_hook(client, "whmcs", change).get_json()["status"] == "applied"
    assert sim.account("mail301")["password_hash"] not in (sent, None)
    everything = stored_text(db)
    assert HASH_PREFIX not in everything and "$6$" not in everything
    assert NEW_PASSWORD not in everything


def test_a_hash_not_yet_applied_is_kept_until_it_is(client, db, sim):
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 302, password=PASSWORD))
    sim.fault(kind="json_500", method="PATCH")
    change = whmcs_envelope(Action.CHANGE_PASSWORD, 302, password=NEW_PASSWORD)
    assert post_hook(client, "whmcs", change).get_json()["status"] == "queued"
    service = db.scalar(select(Service))
    assert service.password_pending and service.password_hash.startswith(HASH_PREFIX)


def test_custom_fields_the_adapters_do_not_read_never_reach_the_database(client, db):
    whmcs = whmcs_envelope(Action.CREATE, 303)
    whmcs["params"]["customfields"] = {"Secret note": "canary-whmcs-custom"}
    whmcs["params"]["clientsdetails"]["customfields1"] = "canary-whmcs-client"
    whmcs["params"]["clientsdetails"]["address1"] = "canary-whmcs-address"
    assert post_hook(client, "whmcs", whmcs).status_code == 200

    blesta = blesta_body(Action.CREATE, 304)
    blesta["service"]["fields"].append({"key": "mystery", "value": "canary-blesta-field"})
    blesta["old_service"]["fields"].append({"key": "api_token", "value": "canary-blesta-token"})
    blesta["vars"]["mystery"] = "canary-blesta-var"
    assert post_hook(client, "blesta", blesta).status_code == 200

    everything = stored_text(db)
    assert "canary" not in everything
    assert "mystery" not in everything and "api_token" not in everything
    # what the adapters read is kept
    assert "blesta304" in everything and "owner803@example.org" in everything
