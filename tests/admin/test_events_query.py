"""bridge.support.queries on the real database (SQLite, or PostgreSQL when configured)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from bridge.lifecycle import EventStatus
from bridge.models import Attempt, Event, Service
from bridge.support.queries import (
    EventFilter,
    conditions,
    hourly,
    list_events,
    retry_targets,
    status_counts,
    unmapped_products,
)
from bridge.web import runtime

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
STATUSES = [EventStatus.APPLIED, EventStatus.FAILED, EventStatus.QUEUED, EventStatus.SUPERSEDED]


def seed(app, n: int, *, services: int = 5, start: datetime = NOW - timedelta(hours=47)) -> None:
    """n events over `services` services, spread evenly from `start` to NOW."""
    with runtime(app).transaction() as session:
        rows = [
            Service(
                source="whmcs" if i % 2 else "blesta",
                service_ref=str(100 + i),
                product_id=str(70 + i % 2),
                addons={},
                aspect_times={},
            )
            for i in range(services)
        ]
        session.add_all(rows)
        session.flush()
        step = (NOW - start) / max(n - 1, 1)
        session.execute(
            insert(Event),
            [
                {
                    "source": rows[i % services].source,
                    "webhook_id": f"msg_{uuid.uuid4().hex}",
                    "body_sha256": "0" * 64,
                    "native_event": "CreateAccount",
                    "action": "create" if i % 3 else "suspend",
                    "service_id": rows[i % services].id,
                    "service_ref": rows[i % services].service_ref,
                    "occurred_at": start + step * i,
                    "received_at": start + step * i,
                    "payload": {},
                    "status": STATUSES[i % len(STATUSES)],
                    "reason": "unmapped_product" if STATUSES[i % 4] is EventStatus.FAILED else None,
                }
                for i in range(n)
            ],
        )


def all_ids(app, f: EventFilter) -> list[int]:
    """The reference answer: every event, filtered in Python."""
    with runtime(app).sessions() as session:
        return [
            e.id for e in session.scalars(select(Event).order_by(Event.id.desc())) if _matches(e, f)
        ]


def _matches(e: Event, f: EventFilter) -> bool:
    return (
        (f.status is None or e.status is f.status)
        and (f.source is None or e.source == f.source)
        and (f.action is None or e.action == f.action)
        and (f.service is None or e.service_ref == f.service)
        and (f.since is None or e.received_at >= f.since)
        and (f.until is None or e.received_at < f.until)
    )


@pytest.mark.parametrize(
    "f",
    [
        EventFilter(),
        EventFilter(status=EventStatus.FAILED),
        EventFilter(source="whmcs", action="create"),
        EventFilter(service="101"),
        EventFilter(since=NOW - timedelta(hours=20), until=NOW - timedelta(hours=2)),
    ],
    ids=["all", "failed", "source+action", "service", "time-range"],
)
def test_keyset_pages_walk_every_event_once_in_order(app, f):
    seed(app, 137)
    expected = all_ids(app, f)
    seen: list[int] = []
    before = None
    with runtime(app).sessions() as session:
        while True:
            page = list_events(session, f, before=before, limit=20)
            assert len(page.events) <= 20
            seen += [e.id for e in page.events]
            if page.older is None:
                break
            before = page.older
        assert seen == expected
        # and back up again with `after`, page by page, newest first on each page
        back: list[int] = []
        after = seen[-1] - 1 if seen else None
        while after is not None:
            page = list_events(session, f, after=after, limit=20)
            back = [e.id for e in page.events] + back
            after = page.newer
        assert back == expected


def test_page_cursors_at_the_edges(app):
    seed(app, 10)
    with runtime(app).sessions() as session:
        first = list_events(session, EventFilter(), limit=10)
        assert (first.older, first.newer) == (None, None)
        top = list_events(session, EventFilter(), limit=4)
        assert top.newer is None and top.older == top.events[-1].id
        middle = list_events(session, EventFilter(), before=top.older, limit=4)
        assert middle.newer == middle.events[0].id
        assert list_events(session, EventFilter(), before=1).events == []


def test_counts_ignore_the_status_filter_but_keep_the_others(app):
    seed(app, 40)
    expected_whmcs = len(all_ids(app, EventFilter(source="whmcs")))
    with runtime(app).sessions() as session:
        counts = status_counts(session, EventFilter(status=EventStatus.FAILED))
        assert sum(counts.values()) == 40
        assert counts[EventStatus.FAILED] == 10 and counts[EventStatus.IGNORED] == 0
        whmcs = status_counts(session, EventFilter(source="whmcs"))
        assert sum(whmcs.values()) == expected_whmcs


def test_retry_targets_are_services_with_unresolved_failures(app):
    seed(app, 40, services=5)
    with runtime(app).transaction() as session:
        first_failed = session.scalars(
            select(Event).where(Event.status == EventStatus.FAILED).order_by(Event.id)
        ).first()
        first_failed.resolved_at = NOW
    with runtime(app).sessions() as session:
        services, events = retry_targets(session, EventFilter())
        assert events == 9 and len(services) == 5
        # whatever status the filter names, only failed events count
        assert retry_targets(session, EventFilter(status=EventStatus.APPLIED)) == (services, 9)


def test_hourly_buckets_by_received_hour_and_counts_failed_attempts(app):
    with runtime(app).transaction() as session:
        service = Service(source="whmcs", service_ref="1", addons={}, aspect_times={})
        session.add(service)
        session.flush()
        times = [
            (NOW - timedelta(minutes=5), EventStatus.APPLIED),  # this hour
            (NOW - timedelta(minutes=29), EventStatus.APPLIED),  # 12:01, this hour
            (NOW - timedelta(minutes=31), EventStatus.FAILED),  # 11:59, the hour before
            (NOW - timedelta(hours=47, minutes=30), EventStatus.QUEUED),  # 13:00 two days ago
            (NOW - timedelta(hours=49), EventStatus.APPLIED),  # outside the window
        ]
        for i, (at, status) in enumerate(times):
            session.add(
                Event(
                    source="whmcs",
                    webhook_id=f"m{i}",
                    body_sha256="0" * 64,
                    native_event="x",
                    service=service,
                    occurred_at=at,
                    received_at=at,
                    payload={},
                    status=status,
                )
            )
        for minutes, outcome in ((10, "retry"), (15, "failed"), (20, "applied"), (35, "retry")):
            session.add(
                Attempt(
                    service_id=service.id,
                    generation=1,
                    worker="w",
                    started_at=NOW - timedelta(minutes=minutes),
                    outcome=outcome,
                    calls=[],
                )
            )
    with runtime(app).sessions() as session:
        hours = hourly(session, NOW)
    assert len(hours) == 48
    assert hours[-1].start == datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert hours[0].start == datetime(2026, 11, 25, 13, tzinfo=UTC)
    assert hours[-1].counts[EventStatus.APPLIED] == 2 and hours[-1].total == 2
    assert hours[-2].counts[EventStatus.FAILED] == 1
    assert hours[0].counts[EventStatus.QUEUED] == 1
    assert sum(h.total for h in hours) == 4
    assert hours[-1].errors == 2 and hours[-2].errors == 1


def test_unmapped_products_count_waiting_events(app):
    seed(app, 40, services=4)
    with runtime(app).sessions() as session:
        found = {
            (u.source, u.product_id): (u.events, u.services) for u in unmapped_products(session)
        }
    # event i belongs to service i % 4 and failed when i % 4 == 1: service 1, whmcs product 71
    assert found == {("whmcs", "71"): (10, 1)}


def test_sqlite_pages_use_an_index_not_a_sort(app, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    seed(app, 50)
    engine = runtime(app).engine
    with engine.connect():
        for f in (EventFilter(), EventFilter(status=EventStatus.FAILED), EventFilter(source="x")):
            query = (
                select(Event.id)
                .where(*conditions(f), Event.id < 1000)
                .order_by(Event.id.desc())
                .limit(51)
            )
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            with engine.connect() as conn:
                plan = " ".join(r[-1] for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "TEMP B-TREE" not in plan, (f, plan)
