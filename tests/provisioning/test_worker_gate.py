"""Real `bridge worker` processes and the mail-server gate: a worker held by an hour-long
pause stops on SIGTERM, and web and worker processes share one login."""

from __future__ import annotations

from sqlalchemy import select

from bridge.lifecycle import EventStatus
from bridge.models import Event
from bridge.web import runtime
from tests.provisioning import test_processes as processes

# Workers do the work here (no inline apply): the fixtures of test_processes.py.
config_tree = processes.config_tree
start_worker = processes.start_worker


def test_a_worker_waiting_out_an_hour_long_retry_after_stops_on_sigterm(
    app, client, sim, db, start_worker
):
    """The gate is blocked for an hour (a 429's Retry-After) with a service due: the worker
    must not sleep in the rate limiter for that hour, deaf to SIGTERM."""
    processes.queue_creates(client, [5001])
    runtime(app).mailserver.limiter.failed(3600, throttled=True)
    worker = start_worker()
    processes.wait_until(
        lambda: "calls paused until" in worker.log(), 60, "the worker to report the pause"
    )

    code, _took = worker.stop(timeout=10)  # an upper bound with a wide margin, not a timing

    assert code == 0, worker.log()
    assert "SIGTERM received" in worker.log()
    assert sim.requests() == []
    (event,) = db.scalars(select(Event))
    assert event.status is EventStatus.QUEUED


def test_one_login_for_web_and_worker_processes_on_a_single_token_server(
    app, client, sim, db, start_worker
):
    """Inline applies in this process and a `bridge worker` process share one token."""
    sim.ctl("PATCH", "config", json={"profile": "single-token"})
    processes.queue_creates(client, [6001, 6002, 6003])
    worker = start_worker()
    processes.wait_until(
        lambda: all(e.status is EventStatus.APPLIED for e in db.scalars(select(Event))),
        60,
        "the worker to apply the creates",
        every=0.5,
    )
    # now calls from this process too, on the worker's token
    mailserver = runtime(app).mailserver
    for name in ("mail6001", "mail6002", "mail6003"):
        assert mailserver.client().find_domainadmin(name) is not None
    code, _took = worker.stop()
    assert code == 0, worker.log()
    assert sim.logins() == 1
    assert all(e["status"] < 400 for e in sim.requests())
