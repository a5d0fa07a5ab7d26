"""Duplicates, repeats, late events, outages, false successes: the service still converges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action, EventStatus
from bridge.models import Event, Service
from bridge.web import runtime, use_settings
from tests.builders import post_hook, signed_headers
from tests.provisioning.conftest import give_domain


def send(http, action, service=1001, when=None, **options):
    payload = whmcs_envelope(action, service, occurred_at=when, **options)
    return post_hook(http, "whmcs", payload).get_json()


def test_duplicates_and_repeats_make_no_calls(client, sim):
    assert send(client, Action.CREATE)["status"] == "applied"
    assert send(client, Action.SUSPEND)["status"] == "applied"
    sim.clear_log()

    body = json.dumps(whmcs_envelope(Action.SUSPEND, 1001)).encode()
    for _ in range(3):  # the same delivery, three times
        answer = client.post(
            "/hooks/whmcs", data=body, headers=signed_headers("whmcs", body, webhook_id="msg_same")
        )
        assert answer.status_code == 200
    assert sim.requests()[-1:] == [] or all(e["method"] == "GET" for e in sim.requests())
    duplicate_calls = len(sim.requests())
    # the first of the three was new (one read to see it is already suspended), then none
    assert duplicate_calls == 1

    sim.clear_log()
    for _ in range(3):  # the same action with new ids: reconciles to the same state
        assert send(client, Action.SUSPEND)["status"] == "applied"
    assert sim.writes() == []


def test_out_of_order_delivery_converges_to_the_newest_state(client, sim, db):
    t = datetime.now(UTC) - timedelta(minutes=10)
    # suspend (t+2) and upgrade (t+1) arrive before the create (t), unsuspend (t+3) last,
    # and a stale suspend (t+1.5) arrives at the very end
    assert send(client, Action.SUSPEND, when=t + timedelta(minutes=2))["status"] != "applied"
    assert (
        send(client, Action.CHANGE_PACKAGE, when=t + timedelta(minutes=1), product=2)["status"]
        != "applied"
    )
    created = send(client, Action.CREATE, when=t, product=1)
    assert created["status"] == "failed" or created["status"] == "applied"
    assert send(client, Action.UNSUSPEND, when=t + timedelta(minutes=3))["status"] == "applied"
    stale = send(client, Action.SUSPEND, when=t + timedelta(seconds=90))
    assert stale["status"] == "superseded"

    da = sim.account("mail1001")
    assert da is not None and da["enabled"] == 1
    assert da["quota_mailboxes"] == 25  # business, from the newer change_package
    service = db.scalar(select(Service))
    assert service.generation == service.applied_generation


def test_error_body_with_http_200_is_not_a_success(client, sim, db, work):
    sim.fault(kind="error_200", count=1, method="POST", path="/api/v1/accounts/")
    answer = send(client, Action.CREATE)
    assert answer["status"] == "queued"
    assert answer["reason"] == "error_body_with_200"
    assert sim.account("mail1001") is None
    outcomes = work(now=datetime.now(UTC) + timedelta(minutes=5))
    assert [o.status for o in outcomes] == ["applied"]
    assert sim.account("mail1001") is not None
    assert db.scalar(select(Event.status)) is EventStatus.APPLIED


def test_six_hour_outage_loses_nothing(app, client, sim, db, work):
    clock = {"now": datetime.now(UTC)}
    # the shared limiter's pauses (circuit cooldown, 429 blocks) follow the same fake clock
    runtime(app).mailserver.limiter.clock = lambda: clock["now"].timestamp()
    for service in (2001, 2002, 2003):
        assert send(client, Action.CREATE, service)["status"] == "applied"
    sim.fault(kind="down")  # the mail server is gone until we say otherwise
    start = datetime.now(UTC)
    answers = [
        send(client, Action.SUSPEND, 2001),
        send(client, Action.CHANGE_PACKAGE, 2002, product=3),
        send(client, Action.CREATE, 2004),
        send(client, Action.TERMINATE, 2003),
    ]
    assert {a["status"] for a in answers} == {"queued"}
    assert all(a["reason"] in ("mailserver_unavailable", "circuit_open") for a in answers)

    # six hours of a worker retrying on the schedule (fake clock), the server still down
    now, attempts = start, 0
    while now < start + timedelta(hours=6):
        now += timedelta(minutes=10)
        clock["now"] = now
        attempts += len(work(now=now))
    assert attempts >= 4
    assert db.scalar(select(Event).where(Event.status == EventStatus.FAILED)) is None

    sim.clear_faults()
    now += timedelta(hours=11)  # beyond the longest backoff step
    clock["now"] = now
    work(now=now)
    statuses = {e.service_ref: e.status for e in db.scalars(select(Event))}
    assert set(statuses.values()) == {EventStatus.APPLIED}
    assert sim.account("mail2001")["enabled"] == 0
    assert sim.account("mail2002")["quota_mailboxes"] == 200
    assert sim.account("mail2003")["enabled"] == 0
    assert sim.account("mail2004")["enabled"] == 1


def test_create_adopts_an_existing_account_of_the_same_owner(client, sim):
    sim.seed(
        {
            "accounts": [
                {
                    "username": "mail1001",
                    "perm_level": "DomainAdmin",
                    "password": "Existing-Passw0rd",
                    "recovery_email": "owner501@example.org",
                    "quota_mailboxes": 1,
                }
            ]
        }
    )
    sim.clear_log()
    assert send(client, Action.CREATE, product=1)["status"] == "applied"
    assert [e["method"] for e in sim.writes()] == ["PATCH"]  # quotas, no second create
    assert sim.account("mail1001")["quota_mailboxes"] == 5


def test_a_create_whose_answer_was_lost_is_ours_after_the_client_moved(client, sim, work):
    # The NMS creates the account but the gateway answers 504; before the retry, billing
    # moves the service to another client (a new recovery e-mail). The soak found this.
    sim.fault(kind="html_504", method="POST", path="/api/v1/accounts/", after=True)
    assert send(client, Action.CREATE, client=501)["status"] == "queued"
    assert sim.account("mail1001")["recovery_email"] == "owner501@example.org"
    moved = send(client, Action.TRANSFER, client=777, previous_client=501)
    assert moved["status"] == "applied"
    work()

    assert sim.account("mail1001")["recovery_email"] == "owner777@example.org"
    assert [e["method"] for e in sim.writes()].count("POST") == 1  # created once


def test_create_refuses_a_username_owned_by_someone_else(client, sim):
    sim.seed(
        {
            "accounts": [
                {
                    "username": "mail1001",
                    "perm_level": "DomainAdmin",
                    "password": "Existing-Passw0rd",
                    "recovery_email": "someone@else.example",
                }
            ]
        }
    )
    answer = send(client, Action.CREATE)
    assert (answer["status"], answer["reason"]) == ("failed", "username_taken")
    assert sim.account("mail1001")["recovery_email"] == "someone@else.example"


def test_client_transfer_moves_the_recovery_email(client, sim):
    send(client, Action.CREATE)
    answer = send(client, Action.TRANSFER, client=900, previous_client=501)
    assert answer["status"] == "applied"
    assert sim.account("mail1001")["recovery_email"] == "owner900@example.org"


def test_ownership_transfer_moves_domains_and_usage(client, sim):
    send(client, Action.CREATE, 1001, product=2)
    send(client, Action.CREATE, 1002, product=2)
    give_domain(sim, "mail1001", "moving.example", [("a", 100, 1), ("b", 100, 1)])
    answer = send(client, Action.TRANSFER, 1001, to_service=1002)
    assert answer["status"] == "applied"
    source, target = sim.account("mail1001"), sim.account("mail1002")
    assert source["domains"] == "" and "moving.example" in target["domains"]
    assert target["quota_mailboxes_used"] == 2 and source["quota_mailboxes_used"] == 0
    sim.clear_log()
    again = send(client, Action.TRANSFER, 1001, to_service=1002)
    assert again["status"] == "applied"
    assert sim.writes() == []


def test_unmapped_product_applies_after_the_mapping_is_fixed(app, client, sim, config_tree):
    answer = send(client, Action.CREATE, product=77)
    assert (answer["status"], answer["reason"]) == ("failed", "unmapped_product")
    assert sim.account("mail1001") is None

    from bridge.config import parse_settings
    from bridge.provisioning.jobs import reconcile_now

    config_tree["products"]["whmcs"][77] = "business"
    fixed = parse_settings(config_tree, {})
    with runtime(app).sessions() as session:
        service_id = session.scalar(select(Service.id))
    outcome = reconcile_now(runtime(app).with_settings(fixed), service_id)
    assert outcome.status == "applied"
    assert sim.account("mail1001")["quota_mailboxes"] == 25


def test_redelivery_of_a_failed_event_retries_it(app, client, sim, config_tree):
    body = json.dumps(whmcs_envelope(Action.CREATE, 1001, product=77)).encode()
    first = client.post(
        "/hooks/whmcs", data=body, headers=signed_headers("whmcs", body, webhook_id="msg_q1")
    )
    assert first.get_json()["reason"] == "unmapped_product"

    from bridge.config import parse_settings

    config_tree["products"]["whmcs"][77] = "starter"
    use_settings(app, parse_settings(config_tree, {}))  # operator fixed the config
    again = client.post(
        "/hooks/whmcs", data=body, headers=signed_headers("whmcs", body, webhook_id="msg_q1")
    )
    answer = again.get_json()
    assert (again.status_code, answer["status"], answer["duplicate"]) == (200, "applied", True)
    assert sim.account("mail1001") is not None
