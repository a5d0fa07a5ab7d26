"""Health: readiness checks and the gauges read from the shared ledger at scrape time.

What lives in the database (events by status, queue depth and age, the circuit) is read when
asked, so it is right however many processes and hosts share the ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text

from bridge import migrate
from bridge.db import read_only
from bridge.lifecycle import EventStatus
from bridge.mailserver.ratelimit import MAX_SLEEP_S, GateState, when
from bridge.models import Event, Service
from bridge.runtime import Runtime
from bridge.support import usage

log = logging.getLogger(__name__)


def readiness(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Database reachable, schema current, mail-server calls not paused (by the circuit, a
    ban or a Retry-After; the reason and its end are reported); one entry each."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with read_only(rt.engine).connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = migrate.current_and_head(rt.engine)
        checks["database"] = {"ok": True}
        checks["migrations"] = {
            "ok": current == head,
            "current": current,
            "head": head,
            **({} if current == head else {"fix": "run `bridge db upgrade`"}),
        }
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its name
        checks["database"] = {"ok": False, "error": exc.__class__.__name__}
    limiter = rt.mailserver.limiter
    if checks["database"]["ok"] and limiter is not None:
        gate = limiter.state()
        now = time.time()
        # Not ready while calls are refused outright (circuit, ban) or held longer than a
        # caller would wait; a pause of a few seconds after a 429 is reported, not failed.
        held = gate.circuit_open(now) or gate.blocked_until - now > MAX_SLEEP_S
        checks["mailserver"] = {
            "ok": not held,
            "consecutive_failures": gate.failures,
            "circuit_open_for_s": max(0, round(gate.open_until - now)),
        }
        if gate.pause_s(now) > 0:
            # Why calls wait and until when: a ban, a Retry-After, or the circuit's pause.
            if gate.banned(now):
                why, end = "mailserver_banned", gate.open_until
            elif gate.circuit_open(now) and gate.open_until >= gate.blocked_until:
                why, end = "circuit_open", gate.open_until
            else:
                why, end = "rate_limited", gate.blocked_until
            checks["mailserver"].update(blocked=why, blocked_until=when(end))
    return checks


def ledger_collector(rt: Runtime) -> LedgerCollector:
    """The scrape-time gauges of this runtime's ledger and mail-server gate."""
    limiter = rt.mailserver.limiter
    return LedgerCollector(rt.engine, limiter.state if limiter is not None else None)


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
        with read_only(self.engine).connect() as conn:  # no write lock on SQLite
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
            used = usage.totals(conn)
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
        yield from _usage_gauges(used, now)
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


def _usage_gauges(totals: usage.Totals, now: float) -> Iterator[Metric]:
    """Totals over all services from the last usage reads (never one series per service)."""
    for name, documentation, value in (
        ("services", "Services with usage figures read from the mail server.", totals.services),
        ("storage_used_mb", "Storage used by all services, MB.", totals.storage_used_mb),
        ("storage_total_mb", "Storage quota of all services, MB.", totals.storage_total_mb),
        ("mailboxes_used", "Mailboxes in use across all services.", totals.mailboxes_used),
        ("domains_used", "Domains in use across all services.", totals.domains_used),
        ("aliases_used", "Aliases in use across all services.", totals.aliases_used),
        (
            "storage_full_services",
            "Services using over 90% of their storage.",
            totals.storage_full,
        ),
    ):
        yield _gauge(f"bridge_usage_{name}", documentation, value)
    age = 0.0 if totals.oldest_read_at is None else max(0.0, now - _epoch(totals.oldest_read_at))
    yield _gauge("bridge_usage_oldest_read_seconds", "Age of the oldest usage figures.", age)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch; the ledger stores UTC (SQLite hands it back naive)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())
