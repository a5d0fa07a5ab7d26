"""/metrics: counters from the code paths that do the work, gauges from the ledger, and the
multiprocess mode under a real gunicorn with several workers."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bridge import metrics
from bridge.adapters.samples import whmcs_envelope
from bridge.db import make_engine, utcnow
from bridge.lifecycle import Action
from bridge.models import Event, Gate
from bridge.support.health import LedgerCollector
from bridge.web import runtime
from tests.builders import post_hook, signed_headers
from tests.provisioning.test_processes import serve_gunicorn, wait_until


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_intake_and_mail_server_calls_are_counted(client, sim):
    before = scrape(client.get("/metrics").get_data(as_text=True))
    created = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 71, product=1))
    assert created.get_json()["status"] == "applied"
    refused = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 72), timestamp=1)
    assert refused.status_code == 401
    assert client.post("/hooks/nosuchsource", json={}).status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    after = scrape(response.get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("bridge_intake_seconds_count", source="whmcs") == 2
    assert grew("bridge_hook_answers_total", source="whmcs", code="200") == 1
    assert grew("bridge_hook_answers_total", source="whmcs", code="401") == 1
    assert grew("bridge_hook_answers_total", source="unknown", code="404") == 1
    # The create: one lookup and one POST, labelled by route without the username.
    assert (
        grew(
            "bridge_mailserver_calls_total", method="POST", route="/api/v1/accounts/", status="200"
        )
        == 1
    )
    assert grew("bridge_reconciles_total", outcome="applied") == 1
    routes = {dict(labels).get("route", "") for (_, labels) in after}
    assert not any("mail71" in route for route in routes)
    assert value(after, "bridge_events", source="whmcs", action="create", status="applied") == 1
    assert value(after, "bridge_ledger_up") == 1


def test_queue_depth_and_age_come_from_the_ledger(client, db, sim):
    sim.fault(kind="down", seconds=600)  # inline apply fails: the events stay queued
    for service in (81, 82, 83):
        assert post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, service)).status_code == 202
    db.execute(
        update(Event)
        .where(Event.service_ref == "81")
        .values(received_at=utcnow() - timedelta(hours=1))
    )
    db.commit()
    samples = scrape(client.get("/metrics").get_data(as_text=True))
    assert value(samples, "bridge_events", source="whmcs", action="create", status="queued") == 3
    assert value(samples, "bridge_queue_depth") == 3
    assert 3600 <= value(samples, "bridge_queue_oldest_seconds") < 3700


def test_retries_limiter_waits_and_the_circuit(app, client, sim):
    before = scrape(client.get("/metrics").get_data(as_text=True))
    sim.fault(kind="html_502", method="GET", path="/api/v1/accounts/")
    answer = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 91)).get_json()
    assert answer["status"] == "queued"
    with runtime(app).engine.begin() as conn:
        conn.execute(update(Gate).values(failures=6, open_until=time.time() + 60))
    after = scrape(client.get("/metrics").get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("bridge_mailserver_calls_total", method="GET", route="/api/v1/accounts/", status="502")
        == 1
    )
    assert grew("bridge_retries_scheduled_total", reason="mailserver_unavailable") == 1
    assert grew("bridge_reconciles_total", outcome="retry") == 1
    assert grew("bridge_ratelimit_wait_seconds_count") >= 2  # the login and the lookup
    assert value(after, "bridge_mailserver_circuit_open") == 1
    assert value(after, "bridge_mailserver_consecutive_failures") == 6


def test_a_scrape_answers_when_the_ledger_does_not(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/missing/dir/bridge.db")
    body, _ = metrics.exposition(LedgerCollector(engine))
    samples = scrape(body.decode())
    assert value(samples, "bridge_ledger_up") == 0


@pytest.fixture
def gunicorn(config_tree, tmp_path):
    """The bridge under real gunicorn: 2 worker processes, metrics folder in tmp_path."""
    config_tree["intake"]["inline_timeout_s"] = 0
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    log_path = tmp_path / "gunicorn.log"
    with serve_gunicorn(
        config_file,
        log_path,
        workers=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        args=("--access-logformat", "pid=%(p)s %(r)s"),
    ) as (url, proc):
        yield url, proc, log_path


def pids_that_served(log: Path, what: str) -> set[str]:
    """gunicorn worker pids in the access log lines of requests containing `what`."""
    lines = log.read_text(errors="replace").splitlines()
    return {
        line.split()[0][4:].strip("<>")
        for line in lines
        if line.startswith("pid=") and what in line
    }


def test_metrics_add_up_every_gunicorn_worker(gunicorn):
    url, proc, log = gunicorn
    sent = 0

    def deliver(service: int) -> int:
        body = json.dumps(whmcs_envelope(Action.CREATE, 4000 + service)).encode()
        return requests.post(
            f"{url}/hooks/whmcs", data=body, headers=signed_headers("whmcs", body), timeout=30
        ).status_code

    # Which worker accepts a connection is the kernel's choice: a quick worker may take a
    # whole batch, so send batches of 40 until both have taken hooks (at most 10).
    for _ in range(10):
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(deliver, range(sent, sent + 40))) == {202}
        sent += 40
        served = pids_that_served(log, "POST /hooks/whmcs")
        if len(served) == 2:
            break
    assert len(served) == 2, "both workers should have taken hooks"

    def intake_count() -> float:
        samples = scrape(requests.get(f"{url}/metrics", timeout=10).text)
        return value(samples, "bridge_intake_seconds_count", source="whmcs")

    # Whichever worker answers the scrape, it reports what both did.
    assert {intake_count() for _ in range(10)} == {sent}

    # A worker that dies keeps its counts in the total; its replacement starts at zero.
    victim = served.pop()
    os.kill(int(victim), signal.SIGKILL)
    wait_until(lambda: deliver(sent) == 202, 30, "gunicorn to take hooks again")
    assert {intake_count() for _ in range(10)} == {sent + 1}
