"""The whole lifecycle against every simulator profile (nmsim/profiles.py): each behaviour the
NMS docs leave open, one at a time. Create, a repeat that writes nothing, upgrade, downgrade
check, suspend, unsuspend, password change, transfer and terminate converge with one login,
or stop with the reason that names what the server cannot do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from bridge.web import runtime
from nmsim.profiles import PROFILES
from tests.builders import post_hook
from tests.provisioning.conftest import Sim

DOMAIN = "profile-example.net"
#: The downgrade check's refusal, by profile: without usage counters the bridge cannot
#: compare, and must refuse rather than pass the downgrade.
DOWNGRADE_REASON = {"no-usage": "usage_unknown"}


def profile_cases() -> list[Any]:
    return [pytest.param(name, id=name) for name in PROFILES]


def send(client, action: Action, service: int, **options: Any) -> dict[str, Any]:
    payload = whmcs_envelope(action, service, **options)
    # mixed letter case, as a billing system may hold it (a server may lower-case it)
    details = payload["params"]["clientsdetails"]
    details["email"] = details["email"].replace("owner", "Owner").replace(".org", ".ORG")
    return post_hook(client, "whmcs", payload).get_json()


def applied(answer: dict[str, Any]) -> None:
    assert answer["status"] == "applied", answer


def give_domain(sim: Sim, owner: str, mailboxes: list[tuple[str, int]]) -> None:
    """A verified domain with mailboxes under `owner`, made by a second MasterAdmin, so the
    bridge's own token survives on a server that keeps one token per user."""
    sim.seed({"accounts": [{"username": "ops", "perm_level": "MasterAdmin"}]})
    token = sim.ctl("POST", "tokens", json={"username": "ops"})["auth_token"]
    api = requests.Session()
    api.auth = ("ops", token)
    base = f"{sim.url}/api/v1"
    assert api.post(f"{base}/domains/", json={"domain": DOMAIN}, timeout=10).ok
    sim.ctl("POST", "verify", json={"domain": DOMAIN})
    assert api.patch(f"{base}/accounts/{owner}/", json={"domains": DOMAIN}, timeout=10).ok
    sim.seed(
        {
            "accounts": [
                {
                    "username": f"{local}@{DOMAIN}",
                    "perm_level": "MailUser",
                    "domain": DOMAIN,
                    "storagequota_total": 100,
                    "enabled": enabled,
                }
                for local, enabled in mailboxes
            ]
        }
    )
    moved = api.post(f"{base}/accounts/cascade/ownership/domainadmin/{owner}/", timeout=10)
    assert moved.status_code == 204, moved.text
    api.close()


def mailboxes(sim: Sim) -> dict[str, int]:
    accounts = sim.ctl("GET", "state")["accounts"]
    return {a["username"]: a["enabled"] for a in accounts if a["perm_level"] == "MailUser"}


@pytest.mark.parametrize("profile", profile_cases())
def test_the_lifecycle_converges_on_every_profile(app, client, sim, work, profile):
    sim.ctl("PATCH", "config", json={"profile": profile})

    # create, then a reconcile that finds nothing to change (letter case included)
    applied(send(client, Action.CREATE, 1001, product=1))
    assert sim.account("mail1001")["quota_mailboxes"] == 5
    sim.clear_log()
    applied(send(client, Action.CHANGE_PACKAGE, 1001, product=1))
    assert sim.writes() == []

    # upgrade; the customer fills six mailboxes (one off on purpose)
    applied(send(client, Action.CHANGE_PACKAGE, 1001, product=2))
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    give_domain(sim, "mail1001", [(f"u{i}", int(i != 3)) for i in range(1, 7)])

    # a downgrade below usage is refused, nothing written; going back supersedes it
    sim.clear_log()
    refused = send(client, Action.CHANGE_PACKAGE, 1001, product=1)
    assert (refused["status"], refused["reason"]) == (
        "failed",
        DOWNGRADE_REASON.get(profile, "quota_below_usage"),
    )
    assert sim.writes() == []
    applied(send(client, Action.CHANGE_PACKAGE, 1001, product=2))

    # suspend and unsuspend: the mailbox that was off stays off
    applied(send(client, Action.SUSPEND, 1001))
    assert sim.account("mail1001")["enabled"] == 0 and set(mailboxes(sim).values()) == {0}
    applied(send(client, Action.UNSUSPEND, 1001))
    assert mailboxes(sim) == {f"u{i}@{DOMAIN}": int(i != 3) for i in range(1, 7)}

    # password change
    before = sim.account("mail1001")["password_hash"]
    applied(send(client, Action.CHANGE_PASSWORD, 1001, password="Second-Passw0rd-2"))
    assert sim.account("mail1001")["password_hash"] != before

    # transfer everything to another service's DomainAdmin
    applied(send(client, Action.CREATE, 1002, product=3))
    applied(send(client, Action.TRANSFER, 1001, to_service=1002))
    giver, receiver = sim.account("mail1001"), sim.account("mail1002")
    assert giver["domains"] == "" and receiver["domains"] == DOMAIN

    # terminate both: disabled now, deleted with the mailboxes after the grace period
    for service in (1001, 1002):
        applied(send(client, Action.TERMINATE, service))
    assert sim.account("mail1002")["enabled"] == 0
    outcomes = work(now=datetime.now(UTC) + timedelta(days=8))
    assert [o.status for o in outcomes] == ["applied", "applied"], outcomes
    assert sim.account("mail1001") is None and sim.account("mail1002") is None
    assert mailboxes(sim) == {}

    # one login served the whole run, whatever the server does with tokens
    assert runtime(app).mailserver.tokens.logins == 1
    assert sim.logins() == 0  # none since the log was cleared after the first create
