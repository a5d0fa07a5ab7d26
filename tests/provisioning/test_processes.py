"""Real `bridge worker` processes against the simulator: a shared rate limit across
processes, a worker killed mid-create, and a clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml
from sqlalchemy import func, select

from bridge.adapters.samples import whmcs_envelope
from bridge.db import utcnow
from bridge.lifecycle import Action, EventStatus
from bridge.models import Attempt, Event, Service
from bridge.provisioning.jobs import run_once
from bridge.web import runtime
from tests.builders import post_hook

RATE = 5
ACCOUNTS = "/api/v1/accounts/"
BRIDGE = Path(sys.executable).with_name("bridge")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` s."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(every)


@dataclass
class Worker:
    """One `bridge worker` subprocess and its log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; return the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started


@pytest.fixture
def config_tree(config_tree: dict[str, Any]) -> dict[str, Any]:
    """Workers do the work here: no inline apply, and a slow, shared mail-server budget."""
    config_tree["mailserver"]["rate_limit_per_s"] = RATE
    config_tree["intake"]["inline_timeout_s"] = 0
    return config_tree


@pytest.fixture
def start_worker(app, config_tree, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start `bridge --config <file> worker` processes on the test database and simulator."""
    assert BRIDGE.exists(), f"{BRIDGE} is missing: install the project into the venv"
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    started: list[Worker] = []

    def start(*options: str) -> Worker:
        log_path = tmp_path / f"worker{len(started)}.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            [str(BRIDGE), "--config", str(config_file), "worker", *options],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        worker = Worker(proc, log_path, log_file)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(timeout=10)
        worker.log_file.close()


def queue_creates(client, services: list[int]) -> None:
    for service in services:
        response = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, service, product=1))
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["status"] == "queued"


def count_events(db, status: EventStatus) -> int:
    return db.scalar(select(func.count()).select_from(Event).where(Event.status == status))


def domainadmins(sim) -> set[str]:
    accounts = sim.ctl("GET", "state")["accounts"]
    return {a["username"] for a in accounts if a["perm_level"] == "DomainAdmin"}


def busiest_second(arrivals: list[float]) -> tuple[int, float]:
    """The most requests in any window [t, t + 1) starting at a request, and that t."""
    ordered = sorted(arrivals)
    best, at = 0, 0.0
    for i, t in enumerate(ordered):
        n = sum(1 for u in ordered[i:] if u < t + 1.0)
        if n > best:
            best, at = n, t
    return best, at


def test_three_workers_together_never_exceed_the_rate(client, sim, db, start_worker):
    services = list(range(3001, 3031))
    queue_creates(client, services)
    assert count_events(db, EventStatus.QUEUED) == len(services)
    assert sim.requests() == []  # nothing went to the mail server yet

    workers = [start_worker() for _ in range(3)]
    wait_until(
        lambda: count_events(db, EventStatus.APPLIED) == len(services),
        60,
        "the workers to apply every create",
        every=0.5,  # keep this process (it serves the simulator) out of the workers' way
    )
    for worker in workers:
        code, took = worker.stop()
        assert code == 0, worker.log()
        assert took < 5
        assert "SIGTERM received" in worker.log()

    entries = sim.requests()
    # when each request reached the simulator (it logs on completion, with the duration)
    arrivals = [e["time"] - e["duration_ms"] / 1000 for e in entries]
    most, at = busiest_second(arrivals)
    assert most <= RATE, f"{most} requests in the second from {at}: " + repr(
        sorted(round(a - at, 3) for a in arrivals if at <= a < at + 1)
    )
    assert all(e["status"] < 400 for e in entries)
    assert domainadmins(sim) == {f"mail{s}" for s in services}
    creates = [e for e in entries if (e["method"], e["path"]) == ("POST", ACCOUNTS)]
    assert len(creates) == len(services)  # each created once, by one worker
    assert sum(1 for e in entries if e["path"] == "/api/v1/auth/") <= len(workers)
    # the load really was shared between processes
    owners = set(db.scalars(select(Attempt.worker)))
    assert len({owner.split(":")[1] for owner in owners}) >= 2


def test_a_create_in_flight_when_the_worker_is_killed_is_adopted_not_repeated(
    app, client, sim, db, start_worker
):
    queue_creates(client, [4001])
    # the create reaches the server, which then takes 3 s before doing it
    sim.fault(kind="latency", ms=3000, method="POST", path=ACCOUNTS)
    worker = start_worker()
    wait_until(
        lambda: sim.ctl("GET", "faults")["queue"] == [], 30, "the create to reach the server"
    )

    worker.proc.kill()
    assert worker.proc.wait(timeout=10) == -signal.SIGKILL
    # the dead worker still holds the lease: nobody else may touch the service yet
    service = db.scalar(select(Service).where(Service.service_ref == "4001"))
    assert service.lease_owner is not None and service.lease_expires_at > utcnow()
    sent_hash = service.password_hash
    rt = runtime(app)
    assert run_once(rt) is None

    # the server finishes the create although its client is gone
    create = wait_until(
        lambda: [e for e in sim.requests() if (e["method"], e["path"]) == ("POST", ACCOUNTS)],
        10,
        "the server to finish the orphaned create",
    )
    assert [e["status"] for e in create] == [200]
    assert domainadmins(sim) == {"mail4001"}

    # once the lease has expired, the job is picked up again and adopts the account
    later = utcnow() + timedelta(seconds=rt.settings.retry.lease_s + 1)
    outcome = run_once(rt, now=later)
    assert outcome is not None
    assert (outcome.status, outcome.write_calls) == ("applied", 0)

    assert domainadmins(sim) == {"mail4001"}
    posts = [e for e in sim.requests() if (e["method"], e["path"]) == ("POST", ACCOUNTS)]
    assert [e["status"] for e in posts] == [200]  # exactly one create, ever
    assert count_events(db, EventStatus.APPLIED) == 1
    service = db.scalar(select(Service).where(Service.service_ref == "4001"))
    assert service.lease_owner is None
    assert service.applied_generation == service.generation
    account = sim.account("mail4001")
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (5, 5120)
    assert account["password_hash"] == sent_hash
    # the server already had it: the hash is erased all the same (keep less)
    assert (service.password_hash, service.password_pending) == (None, False)


def test_sigterm_on_an_idle_worker_exits_cleanly_and_promptly(start_worker, sim):
    worker = start_worker()
    wait_until(lambda: "started" in worker.log(), 30, "the worker to start")

    code, took = worker.stop()

    assert code == 0, worker.log()
    assert took < 3
    log = worker.log()
    assert "SIGTERM received" in log
    assert "stopped after 0 reconciles" in log
    assert sim.requests() == []


def test_worker_logs_json_lines_and_serves_its_metrics(
    client, sim, db, start_worker, config_tree, tmp_path
):
    config_tree["logging"] = {"level": "INFO", "json": True}
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    services = [5101, 5102, 5103]
    queue_creates(client, services)
    port = free_port()
    worker = start_worker("--metrics", f"127.0.0.1:{port}")
    wait_until(lambda: count_events(db, EventStatus.APPLIED) == 3, 60, "the creates to apply")

    scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert (
        'bridge_mailserver_calls_total{method="POST",route="/api/v1/accounts/",status="200"} 3.0'
        in scraped
    )
    assert 'bridge_reconciles_total{outcome="applied"} 3.0' in scraped
    assert "bridge_mailserver_logins_total 1.0" in scraped

    worker.stop()
    lines = [json.loads(line) for line in worker.log().splitlines()]  # every line is JSON
    outcomes = {line["service"]: line for line in lines if line.get("event_id") is not None}
    assert set(outcomes) == {str(s) for s in services}
    for line in outcomes.values():
        assert line["action"] == "create"
        assert line["status"] == "applied"
        assert line["reason"] is None
        assert line["message"].startswith(f"event {line['event_id']} source=whmcs")


def test_worker_metrics_option_is_checked(start_worker):
    worker = start_worker("--metrics", "127.0.0.1:notaport")
    assert worker.proc.wait(timeout=30) == 2
    assert "is not [HOST:]PORT" in worker.log()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_gunicorn(
    config_file: Path,
    log_path: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    entry: str = "wsgi:app",
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The bridge under real gunicorn with gunicorn.conf.py, as deployed (`entry`: one of
    wsgi.py's apps): its URL once /healthz answers, and the process; stopped with SIGTERM
    afterwards."""
    root = Path(__file__).resolve().parents[2]
    port = free_port()
    environ = {
        **os.environ,
        "BRIDGE_CONFIG": str(config_file),
        "BRIDGE_BIND": f"127.0.0.1:{port}",
        "BRIDGE_WORKERS": str(workers),
        "BRIDGE_THREADS": "2",
        **(env or {}),
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(gunicorn), "--config", str(root / "gunicorn.conf.py"), *args, entry],
            cwd=root,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        try:
            return requests.get(f"{url}/healthz", timeout=5).ok
        except requests.RequestException:
            return False

    try:
        wait_until(up, 60, "gunicorn to answer")
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
