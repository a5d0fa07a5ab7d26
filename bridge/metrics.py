"""Prometheus metrics: counters kept by each process, gauges read from the ledger per scrape.

Under gunicorn every worker process writes its counters to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py) and `/metrics` adds them up, so a scrape sees the whole app server, not the
one worker that answered (https://prometheus.github.io/client_python/multiprocess/).
`bridge worker` is its own process: `bridge worker --metrics-port N` serves its counters.
What lives in the database (events by status, queue depth and age, the circuit) is read at
scrape time, so it is right however many processes and hosts share the ledger.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from bridge.models import Event, EventStatus, Service

if TYPE_CHECKING:  # ratelimit imports this module
    from bridge.mailserver.ratelimit import GateState

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)

HOOK_SECONDS = Histogram(
    "bridge_intake_seconds",
    "Time to verify, store and answer one webhook delivery (inline apply included).",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
HOOK_ANSWERS = Counter(
    "bridge_hook_answers",
    "Webhook deliveries answered, by HTTP status code.",
    ["source", "code"],
)
MAILSERVER_CALLS = Counter(
    "bridge_mailserver_calls",
    "Calls made to the mail server, by route and HTTP status (or the network error).",
    ["method", "route", "status"],
)
MAILSERVER_SECONDS = Histogram(
    "bridge_mailserver_call_seconds",
    "Duration of mail-server calls.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
LOGINS = Counter("bridge_mailserver_logins", "Logins to the mail server (one per token).")
LIMITER_WAIT = Histogram(
    "bridge_ratelimit_wait_seconds",
    "How long a call waited for its slot under mailserver.rate_limit_per_s.",
    buckets=(0, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILES = Counter(
    "bridge_reconciles",
    "Reconciles of one service, by outcome (applied, retry, failed).",
    ["outcome"],
)
RETRIES = Counter(
    "bridge_retries_scheduled",
    "Reconciles put off for a later retry after a transient failure, by reason.",
    ["reason"],
)


class LedgerCollector(Collector):
    """Gauges computed from the shared database when scraped."""

    def __init__(
        self, engine: Engine, limiter_state: Callable[[], GateState] | None = None
    ) -> None:
        self.engine = engine
        self.limiter_state = limiter_state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bridge_ledger_up", "1 when the ledger database answered.")
        try:
            families = list(self._from_ledger())
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the DB is down
            log.warning("metrics: the ledger did not answer (%s)", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_ledger(self) -> Iterator[Metric]:
        now = time.time()
        events = GaugeMetricFamily(
            "bridge_events",
            "Stored events by source, action and status.",
            labels=["source", "action", "status"],
        )
        waiting = (EventStatus.RECEIVED, EventStatus.QUEUED)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Event.source, Event.action, Event.status, func.count()).group_by(
                    Event.source, Event.action, Event.status
                )
            ).all()
            oldest = conn.execute(
                select(func.min(Event.received_at)).where(Event.status.in_(waiting))
            ).scalar()
            due = conn.execute(
                select(func.count()).select_from(Service).where(Service.job_due_at.is_not(None))
            ).scalar_one()
        for source, action, status, count in rows:
            events.add_metric([source, action or "none", status.value], count)
        yield events
        yield _gauge(
            "bridge_queue_depth", "Services waiting for a reconcile (now or at a retry).", due
        )
        age = 0.0 if oldest is None else max(0.0, now - _epoch(oldest))
        yield _gauge(
            "bridge_queue_oldest_seconds", "Age of the oldest event not yet applied or failed.", age
        )
        if self.limiter_state is not None:
            gate = self.limiter_state()
            yield _gauge(
                "bridge_mailserver_circuit_open",
                "1 while calls to the mail server pause after repeated failures.",
                1 if gate.circuit_open(now) else 0,
            )
            yield _gauge(
                "bridge_mailserver_consecutive_failures",
                "Transient mail-server failures since the last success.",
                gate.failures,
            )
            yield _gauge(
                "bridge_mailserver_blocked_seconds",
                "Seconds left of a Retry-After pause the mail server asked for.",
                max(0.0, gate.blocked_until - now),
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch; the ledger stores UTC (SQLite hands it back naive)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())


class _ThisProcess(Collector):
    """This process's own counters, when not in multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(ledger: Collector) -> tuple[bytes, str]:
    """The text for one scrape: every process's counters plus the ledger's gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(ledger)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a finished gunicorn worker's live gauges (gunicorn.conf.py child_exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
