"""The engine against what the NMS docs leave open, over real HTTP: a ban keeps events queued,
terminate without the cascade route, a transfer that cannot complete is undone, provisioning
resumes seconds after an outage. Worker processes: test_worker_gate.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action, EventStatus
from bridge.mailserver.ratelimit import PROBE_INTERVAL_S
from bridge.models import Event, Service
from bridge.provisioning.jobs import reconcile_now, run_once
from bridge.provisioning.worker import gate_pause
from bridge.web import runtime
from tests.builders import post_hook
from tests.provisioning.conftest import Sim, give_domain

CASCADE = "/api/v1/accounts/cascade/"


def send(http, action, service=1001, when=None, **options) -> dict[str, Any]:
    payload = whmcs_envelope(action, service, occurred_at=when, **options)
    return post_hook(http, "whmcs", payload).get_json()


def events(db, service: int) -> list[Event]:
    return list(
        db.scalars(select(Event).where(Event.service_ref == str(service)).order_by(Event.id))
    )


def ban_this_address(sim: Sim) -> None:
    """Cross the simulator's rate limit until it bans 127.0.0.1 (its clock frozen)."""
    sim.ctl("POST", "clock", json={"freeze": True})
    sim.ctl("PATCH", "config", json={"rate_limit": 1, "ban_after": 2})
    for _ in range(3):
        sim.http.get(f"{sim.url}/api/v1/accounts/", timeout=10)


# ---- a ban -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["documented", "ban-403"])
def test_a_ban_fails_nothing_events_wait_for_its_end(app, client, sim, db, work, profile):
    sim.ctl("PATCH", "config", json={"profile": profile})
    assert send(client, Action.CREATE)["status"] == "applied"
    ban_this_address(sim)

    answers = [send(client, Action.SUSPEND), send(client, Action.CREATE, 1002)]
    answers += [send(client, Action.CHANGE_PACKAGE, 1001, product=2)]

    assert {a["status"] for a in answers} == {"queued"}
    assert {a["reason"] for a in answers} == {"mailserver_banned"}
    assert all("banned us until" in a["message"] for a in answers)
    assert db.scalar(select(Event).where(Event.status == EventStatus.FAILED)) is None
    # the worker leaves them alone until the ban ends (an hour; not a doubling pause)
    assert work() == []
    due = [s.job_due_at for s in db.scalars(select(Service))]
    ends = datetime.now(UTC) + timedelta(hours=1)
    assert all(d is None or d > ends - timedelta(minutes=2) for d in due)
    # after the ban the events go out
    sim.ctl("POST", "clock", json={"advance": 3601})
    sim.ctl("PATCH", "config", json={"rate_limit": 0})
    runtime(app).mailserver.limiter.clock = lambda: datetime.now(UTC).timestamp() + 3601
    work(now=datetime.now(UTC) + timedelta(hours=1, minutes=5))
    assert {e.status for e in db.scalars(select(Event))} == {EventStatus.APPLIED}
    assert sim.account("mail1001")["enabled"] == 0


# ---- terminate without the cascade route --------------------------------------------------


def terminate_after_grace(client, work, service: int = 1001) -> list[Any]:
    assert send(client, Action.TERMINATE, service)["status"] == "applied"
    return work(now=datetime.now(UTC) + timedelta(days=8))


def test_terminate_without_the_cascade_route_deletes_step_by_step(client, sim, work, db):
    sim.ctl("PATCH", "config", json={"profile": "no-cascade"})
    for service in (1001, 1002):
        assert send(client, Action.CREATE, service, product=2)["status"] == "applied"
    give_domain(sim, "mail1001", "gone.example", [("a", 100, 1), ("b", 100, 0)])
    give_domain(sim, "mail1002", "kept.example", [("c", 100, 1)])
    # a domain another DomainAdmin lists too is not mail1001's alone: it stays
    give_domain(sim, "mail1001", "shared.example", [("d", 100, 1)])
    sim.seed({"accounts": []})
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    shared = sim.http.patch(
        f"{sim.url}/api/v1/accounts/mail1002/",
        json={"domains": "kept.example,shared.example"},
        auth=("admin", token),
        timeout=10,
    )
    assert shared.ok, shared.text
    sim.clear_log()

    outcomes = terminate_after_grace(client, work)

    assert [o.status for o in outcomes] == ["applied"]
    assert sim.account("mail1001") is None
    state = sim.ctl("GET", "state")
    users = {a["username"] for a in state["accounts"] if a["perm_level"] == "MailUser"}
    assert users == {"c@kept.example", "d@shared.example"}
    zones = {d["domain"] for d in state["domains"]}
    assert "gone.example" not in zones and {"kept.example", "shared.example"} <= zones
    assert sim.account("mail1002")["domains"] == "kept.example, shared.example"
    cascade = [
        e for e in sim.requests() if e["path"].startswith(CASCADE) and e["method"] == "DELETE"
    ]
    assert [e["status"] for e in cascade] == [404]  # tried once, then step by step
    assert events(db, 1001)[-1].status is EventStatus.APPLIED


def test_terminate_without_the_cascade_route_stops_with_a_reason(client, sim, work, db):
    """What the step-by-step delete cannot remove (an alias here) stops it with a reason
    that says what is left; the account stays, disabled."""
    sim.ctl("PATCH", "config", json={"profile": "no-cascade"})
    assert send(client, Action.CREATE, product=2)["status"] == "applied"
    give_domain(sim, "mail1001", "alias.example", [("a", 100, 1)])
    sim.seed({"aliases": [{"alias": "info@alias.example", "recipients": "a@alias.example"}]})

    outcomes = terminate_after_grace(client, work)

    assert [(o.status, o.reason) for o in outcomes] == [("failed", "delete_incomplete")]
    message = outcomes[0].message
    assert "no cascade delete route" in message and "the domain alias.example" in message
    assert "domain_not_empty" in message
    da = sim.account("mail1001")
    assert da is not None and da["enabled"] == 0


# ---- a transfer that cannot complete --------------------------------------------------------


def two_services_and_a_domain(client, sim) -> None:
    for service in (1001, 1002):
        assert send(client, Action.CREATE, service, product=2)["status"] == "applied"
    give_domain(sim, "mail1001", "moving.example", [("a", 100, 1), ("b", 100, 1)])


def test_a_failed_ownership_call_gives_the_domains_back(client, sim, work, db):
    two_services_and_a_domain(client, sim)
    sim.fault(kind="json_500", method="POST", path=CASCADE + "ownership/")

    answer = send(client, Action.TRANSFER, 1001, to_service=1002)

    assert (answer["status"], answer["reason"]) == ("queued", "mailserver_unavailable")
    assert "the domains were given back to mail1001" in answer["message"]
    giver, receiver = sim.account("mail1001"), sim.account("mail1002")
    assert giver["domains"] == "moving.example" and receiver["domains"] == ""
    assert giver["quota_mailboxes_used"] == 2 and receiver["quota_mailboxes_used"] == 0
    # the retry completes it
    work(now=datetime.now(UTC) + timedelta(minutes=10))
    assert events(db, 1001)[-1].status is EventStatus.APPLIED
    assert sim.account("mail1002")["quota_mailboxes_used"] == 2


def test_a_lost_answer_to_a_completed_transfer_is_not_undone(client, sim, db):
    two_services_and_a_domain(client, sim)
    sim.fault(kind="html_504", method="POST", path=CASCADE + "ownership/", after=True)

    answer = send(client, Action.TRANSFER, 1001, to_service=1002)

    assert answer["status"] == "applied"
    giver, receiver = sim.account("mail1001"), sim.account("mail1002")
    assert giver["domains"] == "" and receiver["domains"] == "moving.example"
    assert receiver["quota_mailboxes_used"] == 2


def test_a_transfer_the_receiver_has_no_room_for_writes_nothing(client, sim):
    assert send(client, Action.CREATE, 1001, product=2)["status"] == "applied"
    assert send(client, Action.CREATE, 1002, product=1)["status"] == "applied"
    give_domain(sim, "mail1001", "big.example", [(f"u{i}", 100, 1) for i in range(6)])

    answer = send(client, Action.TRANSFER, 1001, to_service=1002)

    assert (answer["status"], answer["reason"]) == ("failed", "transfer_over_quota")
    assert "mailboxes: 0 in use + 6 moving > limit 5" in answer["message"]
    assert sim.writes() == []


# ---- after an outage ------------------------------------------------------------------------


@pytest.fixture
def fake_clock(app) -> dict[str, float]:
    """The shared gate's clock, moved by the test (the simulator keeps real time)."""
    now = {"t": datetime.now(UTC).timestamp()}
    limiter = runtime(app).mailserver.limiter
    limiter.clock = lambda: now["t"]
    limiter.sleep = lambda seconds: now.__setitem__("t", now["t"] + seconds)
    return now


@pytest.mark.parametrize("kind", ["html_503", "drop"])
def test_provisioning_resumes_within_seconds_of_the_server_answering(
    app, client, sim, db, fake_clock, kind
):
    """A 10-minute outage, the worker's loop ticking once a (fake) second: probes stay one
    per PROBE_INTERVAL_S, and the first call after the server is back succeeds within
    15 s (it used to wait out a pause doubled up to 300 s)."""
    rt = runtime(app)
    services = range(1001, 1007)
    for service in services:
        assert send(client, Action.CREATE, service)["status"] == "applied"
    sim.fault(kind=kind, count=100000)
    answers = [send(client, Action.SUSPEND, service) for service in services]
    assert {a["status"] for a in answers} == {"queued"}
    assert answers[-1]["reason"] == "circuit_open"  # five failures opened it
    sim.clear_log()

    def tick() -> None:
        when = datetime.fromtimestamp(fake_clock["t"], UTC)
        if gate_pause(rt) == 0:
            run_once(rt, now=when)
        fake_clock["t"] += 1

    start = fake_clock["t"]
    while fake_clock["t"] < start + 600:
        tick()
    failed_calls = len(sim.requests())
    # a light probe every PROBE_INTERVAL_S at most, not a storm
    assert 600 / PROBE_INTERVAL_S - 10 <= failed_calls <= 600 / PROBE_INTERVAL_S + 1
    assert rt.mailserver.limiter.state().failures >= 5  # the circuit is open

    sim.clear_faults()
    sim.clear_log()
    back = fake_clock["t"]
    while not any(e["status"] == 200 for e in sim.requests()):
        assert fake_clock["t"] < back + 60, "no call went out a minute after the outage"
        tick()
    assert fake_clock["t"] - back <= 15
    # the circuit is closed again: a waiting service is applied at once when asked
    assert gate_pause(rt) == 0
    service = db.scalar(select(Service).where(Service.service_ref == "1006"))
    assert reconcile_now(rt, service.id).status == "applied"
    assert sim.account("mail1006")["enabled"] == 0
