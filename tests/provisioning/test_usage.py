"""The worker's usage refresh (bridge/provisioning/usage.py) against the simulator over HTTP."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from bridge.adapters.samples import whmcs_envelope
from bridge.db import utcnow
from bridge.lifecycle import Action
from bridge.models import Gate, Schedule, Service, Usage
from bridge.provisioning import usage
from bridge.provisioning.worker import run_forever
from bridge.web import runtime
from tests.builders import post_hook
from tests.provisioning.conftest import give_domain
from tests.provisioning.test_ownership import foreign


def create(client, ref: int, product: int = 1) -> None:
    body = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, ref, product=product))
    assert body.get_json()["status"] == "applied", body.get_json()


def stats_calls(sim) -> list[dict]:
    return [
        e
        for e in sim.requests()
        if e["route"] in ("/api/v1/accounts/", "/api/v1/stats/quota/") and e["method"] == "GET"
    ]


def test_refresh_reads_bound_services_only_and_never_a_foreign_domainadmin(app, client, sim, db):
    create(client, 1001)
    give_domain(sim, "mail1001", "one.example", [("ann", 500, 1), ("bob", 700, 1)])
    foreign(sim, "mail10010")  # a look-alike name of another customer
    foreign(sim, "mail1002")  # someone else's account under the name service 1002 wants
    refused = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1002)).get_json()
    assert refused["reason"] == "username_taken"

    done = usage.refresh(runtime(app))

    assert (done.services, done.unseen) == (1, 0)
    rows = db.scalars(select(Usage)).all()
    assert len(rows) == 1
    row = rows[0]
    service = db.scalar(select(Service).where(Service.service_ref == "1001"))
    assert (row.service_id, row.username) == (service.id, "mail1001")
    assert (row.storage_used_mb, row.storage_total_mb) == (1200, 5120)
    assert (row.mailboxes_used, row.mailboxes_limit) == (2, 5)
    assert (row.domains_used, row.domains_limit) == (1, 1)
    assert (row.aliases_used, row.aliases_limit) == (0, 10)
    assert row.read_at is not None


def test_refresh_costs_two_calls_per_50_domainadmins_within_the_rate_limit(app, client, sim, db):
    create(client, 1001)
    sim.seed(
        {
            "accounts": [
                {"username": f"other{i:03}", "perm_level": "DomainAdmin"} for i in range(119)
            ]
        }
    )  # 120 DomainAdmins in all: pages at 0, 50 and 100
    sim.clear_log()
    rt = runtime(app)
    limiter = rt.mailserver.limiter
    assert limiter is not None
    before = db.scalar(select(Gate.next_slot_at))

    usage.refresh(rt)

    calls = stats_calls(sim)
    assert len(calls) == 6
    assert (
        sorted(e["path"] for e in calls) == ["/api/v1/accounts/"] * 3 + ["/api/v1/stats/quota/"] * 3
    )
    # Every call took a slot of the shared gate (1.1 / rate apart), as provisioning does.
    after = db.scalar(select(Gate.next_slot_at))
    assert after > before
    assert after - calls[0]["time"] >= (len(calls) - 1) * limiter.interval
    times = [e["time"] for e in calls]
    assert times[-1] - times[0] >= (len(times) - 1) * limiter.interval * 0.9
    assert db.scalar(select(Usage.mailboxes_limit)) == 5


def test_figures_the_server_leaves_out_stay_unknown(app, client, sim, db):
    create(client, 1001)
    sim.ctl("PATCH", "config", json={"profile": "no-usage", "rate_limit": 0})
    usage.refresh(runtime(app))
    row = db.scalar(select(Usage))
    assert (row.mailboxes_used, row.domains_used, row.storage_used_mb) == (None, None, None)
    assert (row.mailboxes_limit, row.storage_total_mb) == (5, 5120)


def test_empty_pages_as_404_end_the_paging(app, client, sim, db):
    create(client, 1001)
    sim.seed(
        {"accounts": [{"username": f"o{i:02}", "perm_level": "DomainAdmin"} for i in range(49)]}
    )  # exactly 50: the page after is empty, answered 404 by this profile
    sim.ctl("PATCH", "config", json={"profile": "empty-404", "rate_limit": 0})
    assert usage.refresh(runtime(app)).services == 1


def test_refresh_is_due_once_per_period_across_workers(app, client, sim, db):
    create(client, 1001)
    rt = runtime(app)
    now = utcnow()
    assert usage.refresh_if_due(rt, now) is not None
    assert usage.refresh_if_due(rt, now + timedelta(hours=5)) is None  # another worker, later
    schedule = db.get(Schedule, usage.TASK)
    assert schedule.due_at == now + timedelta(hours=6)
    assert schedule.last_result.startswith("ok: 1 services")
    assert usage.refresh_if_due(rt, now + timedelta(hours=6, seconds=1)) is not None


def test_a_failed_refresh_keeps_the_figures_and_tries_again_soon(app, client, sim, db):
    create(client, 1001)
    rt = runtime(app)
    now = utcnow()
    usage.refresh_if_due(rt, now)
    first = db.scalar(select(Usage.read_at))
    sim.fault(kind="down")
    later = now + timedelta(hours=7)
    assert usage.refresh_if_due(rt, later) is None
    schedule = db.get(Schedule, usage.TASK)
    assert schedule.due_at == later + usage.RETRY_AFTER
    assert schedule.last_result.startswith("failed: ")
    assert db.scalar(select(Usage.read_at)) == first


class OneRound(threading.Event):
    """A stop flag that lets the worker loop run exactly once."""

    def is_set(self) -> bool:
        if not super().is_set():
            self.set()
            return False
        return True


def test_the_worker_loop_refreshes_when_due(app, client, sim, db):
    create(client, 1001)
    run_forever(runtime(app), OneRound())
    assert db.scalar(select(Usage.username)) == "mail1001"
    assert db.get(Schedule, usage.TASK) is not None
