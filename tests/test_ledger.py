"""Unit tests of the ledger: record_event folds each event into its service; find_event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.ledger import IdempotencyConflictError, find_event, record_event
from bridge.lifecycle import (
    Action,
    BillingEvent,
    EventStatus,
    Ignored,
    ServiceState,
    TransferKind,
)
from bridge.models import Event, Service
from bridge.web import runtime

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
NOW = T1 + timedelta(minutes=5)
HASH = "$6$rounds=5000$saltsalt$hashofthenewpassword"
OLD_HASH = "$6$rounds=5000$saltsalt$hashoftheoldpassword"
DIGEST = "a" * 64
ALL_ASPECTS = ("lifecycle", "package", "password", "owner", "ownership")
KEEP = "keep"  # the action leaves the desired state as it was


def billing(action: Action, at: datetime = T1, **fields: Any) -> BillingEvent:
    """A normalized event for WHMCS service 100."""
    return BillingEvent(
        action=action,
        native_event=f"Test{action.value}",
        service_ref="100",
        occurred_at=at,
        payload={"service": 100},
        **fields,
    )


def record(app, parsed, *, webhook_id="wh-1", digest=DIGEST, password_hash=None) -> int:
    """Record one event in its own committed transaction; its id."""
    rt = runtime(app)
    with rt.transaction() as session:
        event = record_event(
            session,
            source="whmcs",
            webhook_id=webhook_id,
            body_sha256=digest,
            parsed=parsed,
            password_hash=password_hash,
            mappings=rt.settings.mappings,
            now=NOW,
        )
        session.flush()
        return event.id


def seed(app, state: ServiceState, at: datetime = T0, **overrides: Any) -> None:
    """An existing starter service, bound to `acme` (imported, so no create was seen), whose
    every aspect was last set at `at`."""
    values: dict[str, Any] = {
        "source": "whmcs",
        "service_ref": "100",
        "username": "acme",
        "bound_how": "imported",
        "bound_at": T0,
        "create_requested": False,
        "domain": "acme.example",
        "client_ref": "c1",
        "client_email": "owner@example.com",
        "client_name": "Owner",
        "product_id": "1",
        "addons": {},
        "desired_state": state,
        "password_hash": OLD_HASH,
        "password_pending": False,
        "aspect_times": {a: at.isoformat() for a in ALL_ASPECTS},
        "terminate_requested_at": at if state is ServiceState.TERMINATED else None,
        "generation": 4,
        "applied_generation": 4,
        "attempt_count": 0,
        **overrides,
    }
    with runtime(app).transaction() as session:
        session.add(Service(**values))


def service(db) -> Service | None:
    return db.scalar(select(Service).where(Service.source == "whmcs", Service.service_ref == "100"))


def snapshot(row: Service) -> dict[str, Any]:
    """What the desired state of a service row is made of."""
    names = [
        "username",
        "desired_state",
        "product_id",
        "tier_key",
        "password_hash",
        "password_pending",
        "client_ref",
        "client_email",
        "client_name",
        "transfer_to",
        "aspect_times",
        "terminate_requested_at",
        "generation",
        "job_due_at",
    ]
    return {n: getattr(row, n) for n in names}


@dataclass(frozen=True)
class Case:
    """One action: its event fields, the aspects it sets and the state it asks for."""

    action: Action
    fields: dict[str, Any] = field(default_factory=dict)
    aspects: tuple[str, ...] = ()
    state: ServiceState | str = KEEP
    password_hash: str | None = None


CLIENT = {"client_ref": "c2", "client_email": "new@example.com", "client_name": "New Owner"}
CASES = {
    "create": Case(
        Action.CREATE,
        {"product_id": "2", "username": "acme", "domain": "acme.example"}
        | {"client_ref": "c1", "client_email": "owner@example.com", "client_name": "Owner"},
        ("lifecycle", "package", "password", "owner"),
        ServiceState.ACTIVE,
        HASH,
    ),
    "suspend": Case(Action.SUSPEND, {"reason": "overdue"}, ("lifecycle",), ServiceState.SUSPENDED),
    "unsuspend": Case(Action.UNSUSPEND, {}, ("lifecycle",), ServiceState.ACTIVE),
    "terminate": Case(Action.TERMINATE, {}, ("lifecycle",), ServiceState.TERMINATED),
    "change_package": Case(Action.CHANGE_PACKAGE, {"product_id": "3"}, ("package",)),
    "change_password": Case(Action.CHANGE_PASSWORD, {}, ("password",), password_hash=HASH),
    "transfer_client": Case(
        Action.TRANSFER,
        {"transfer_kind": TransferKind.CLIENT, "previous_client_ref": "c1", **CLIENT},
        ("owner",),
    ),
    "transfer_ownership": Case(
        Action.TRANSFER,
        {"transfer_kind": TransferKind.OWNERSHIP, "target_service_ref": "200"},
        ("ownership",),
    ),
    "renew": Case(Action.RENEW),
}
PRIORS = {
    "none": None,
    "active": ServiceState.ACTIVE,
    "suspended": ServiceState.SUSPENDED,
    "terminated": ServiceState.TERMINATED,
}


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("name", list(CASES))
def test_every_action_on_every_service_state(app, db, name, prior):
    """The event's status and exactly the aspects the action sets, nothing else."""
    case, state = CASES[name], PRIORS[prior]
    if state is not None:
        seed(app, state)
    before = snapshot(service(db)) if state is not None else None

    event_id = record(app, billing(case.action, **case.fields), password_hash=case.password_hash)
    event = db.get(Event, event_id)
    row = service(db)
    assert row is not None and event.service_id == row.id
    assert event.action == case.action.value
    assert row.create_requested is (case.action is Action.CREATE)
    assert row.username == ("acme" if state is not None or "username" in case.fields else None)
    assert event.occurred_at == T1 and event.received_at == NOW

    if not case.aspects:  # a renewal is recorded and changes nothing
        assert (event.status, event.generation, event.finished_at) == (
            EventStatus.APPLIED,
            None,
            NOW,
        )
        assert snapshot(row) == (before or snapshot(row))
        assert row.generation == (4 if state is not None else 0)
        assert row.aspect_times == (
            {a: T0.isoformat() for a in ALL_ASPECTS} if state is not None else {}
        )
        return

    assert (event.status, event.reason, event.finished_at) == (EventStatus.QUEUED, None, None)
    generation = (4 if state is not None else 0) + 1
    assert row.generation == event.generation == generation
    assert row.job_due_at == NOW
    old_times = {a: T0.isoformat() for a in ALL_ASPECTS} if state is not None else {}
    assert row.aspect_times == {**old_times, **{a: T1.isoformat() for a in case.aspects}}

    keeps_deletion = state is ServiceState.TERMINATED and case.action in (
        Action.SUSPEND,
        Action.TERMINATE,
    )
    if keeps_deletion:  # only unsuspend and create cancel a pending deletion
        assert (row.desired_state, row.terminate_requested_at) == (ServiceState.TERMINATED, T0)
    else:
        assert row.desired_state == (state if case.state == KEEP else case.state)
    if keeps_deletion:
        pass
    elif case.action is Action.TERMINATE:
        assert row.terminate_requested_at == T1
    elif "lifecycle" in case.aspects:
        assert row.terminate_requested_at is None
    else:
        assert row.terminate_requested_at == (T0 if state is ServiceState.TERMINATED else None)

    product = case.fields.get("product_id", "1" if state is not None else None)
    assert row.product_id == product
    if "password" in case.aspects:
        assert (row.password_hash, row.password_pending) == (HASH, True)
    else:
        assert row.password_hash == (OLD_HASH if state is not None else None)
        assert row.password_pending is False
    assert row.transfer_to == ("200" if "ownership" in case.aspects else None)
    owner = (
        {k: case.fields[k] for k in CLIENT}
        if "owner" in case.aspects
        else {"client_ref": "c1", "client_email": "owner@example.com", "client_name": "Owner"}
        if state is not None
        else dict.fromkeys(CLIENT)
    )
    assert {k: getattr(row, k) for k in CLIENT} == owner


@pytest.mark.parametrize(
    ("action", "expected"),
    [(Action.CHANGE_PACKAGE, "acme"), (Action.CREATE, "other")],
    ids=["first-username-sticks", "a-create-names-its-target"],
)
def test_the_username_of_an_unbound_service(app, db, action, expected):
    """Until bound, the first username sticks unless a create names another; the domain is
    kept from the first event that names one."""
    record(app, billing(Action.SUSPEND, at=T0), webhook_id="wh-1")
    row = service(db)
    assert (row.username, row.domain, row.desired_state) == (None, None, ServiceState.SUSPENDED)
    fields = {"product_id": "1", "username": "acme", "domain": "acme.example"}
    record(app, billing(Action.CREATE, **fields), webhook_id="wh-2")
    assert service(db).username == "acme"
    fields = {"product_id": "2", "username": "other", "domain": "other.example"}
    later = billing(action, at=T1 + timedelta(minutes=1), **fields)
    assert db.get(Event, record(app, later, webhook_id="wh-3")).status is EventStatus.QUEUED
    row = service(db)
    assert (row.username, row.domain, row.bound) == (expected, "acme.example", False)


def test_a_bound_service_refuses_another_username(app, db):
    seed(app, ServiceState.ACTIVE)
    before = snapshot(service(db))
    fields = {"product_id": "2", "username": "other"}
    event_id = record(app, billing(Action.CHANGE_PACKAGE, **fields), webhook_id="wh-1")
    event = db.get(Event, event_id)
    assert (event.status, event.reason, event.finished_at) == (
        EventStatus.FAILED,
        "username_changed",
        NOW,
    )
    assert event.generation is None and "relink" in event.message
    assert snapshot(service(db)) == before
    # the same account, spelled in another case, is not a change
    fields = {"product_id": "2", "username": "ACME"}
    event_id = record(app, billing(Action.CHANGE_PACKAGE, **fields), webhook_id="wh-2")
    assert db.get(Event, event_id).status is EventStatus.QUEUED
    assert (service(db).username, service(db).product_id) == ("acme", "2")


@pytest.mark.parametrize("name", ["create", "change_password"])
def test_no_password_hash_leaves_the_password_alone(app, db, name):
    """The password aspect moves in time, but only a hash sets a pending password."""
    case = CASES[name]
    seed(app, ServiceState.ACTIVE)
    event_id = record(app, billing(case.action, **case.fields), password_hash=None)
    assert db.get(Event, event_id).status is EventStatus.QUEUED
    row = service(db)
    assert (row.password_hash, row.password_pending) == (OLD_HASH, False)
    assert row.aspect_times["password"] == T1.isoformat()


@pytest.mark.parametrize("name", [n for n in CASES if n != "renew"])
def test_an_older_event_is_superseded_and_changes_nothing(app, db, name):
    """Every aspect the event sets was already set by a newer one."""
    case = CASES[name]
    seed(app, ServiceState.SUSPENDED, at=T1, transfer_to="300", password_pending=True)
    before = snapshot(service(db))
    older = billing(case.action, at=T0, **case.fields)
    event_id = record(app, older, password_hash=case.password_hash)
    event = db.get(Event, event_id)
    assert (event.status, event.reason) == (EventStatus.SUPERSEDED, "superseded")
    assert (event.generation, event.finished_at) == (None, NOW)
    assert snapshot(service(db)) == before
    # a billing system that sent a create did create the service, late or not
    assert service(db).create_requested is (case.action is Action.CREATE)


def test_a_superseded_create_does_not_retarget_an_unbound_service(app, db):
    record(app, billing(Action.CREATE, product_id="1", username="newname"), webhook_id="wh-1")
    stale = billing(Action.CREATE, at=T0, product_id="1", username="oldname")
    event_id = record(app, stale, webhook_id="wh-2")
    assert db.get(Event, event_id).status is EventStatus.SUPERSEDED
    assert service(db).username == "newname"


def test_create_older_than_a_suspend_keeps_the_suspend(app, db):
    """Only the aspects that are older move: the late create sets the package, not the state."""
    record(app, billing(Action.SUSPEND), webhook_id="wh-suspend")
    fields = CASES["create"].fields
    event_id = record(app, billing(Action.CREATE, at=T0, **fields), password_hash=HASH)
    event = db.get(Event, event_id)
    row = service(db)
    assert event.status is EventStatus.QUEUED
    assert row.desired_state is ServiceState.SUSPENDED
    assert (row.product_id, row.password_hash, row.client_ref) == ("2", HASH, "c1")
    assert row.aspect_times["lifecycle"] == T1.isoformat()
    assert row.aspect_times["package"] == T0.isoformat()
    assert row.generation == event.generation == 2


def test_an_event_as_old_as_the_stamp_still_applies(app, db):
    """Same billing second: the later delivery wins."""
    seed(app, ServiceState.SUSPENDED, at=T1)
    event_id = record(app, billing(Action.UNSUSPEND, at=T1))
    assert db.get(Event, event_id).status is EventStatus.QUEUED
    assert service(db).desired_state is ServiceState.ACTIVE


def test_terminate_then_unsuspend_clears_the_termination(app, db):
    record(app, billing(Action.TERMINATE, at=T0), webhook_id="wh-1")
    assert service(db).terminate_requested_at == T0
    record(app, billing(Action.UNSUSPEND, at=T1), webhook_id="wh-2")
    row = service(db)
    assert (row.desired_state, row.terminate_requested_at) == (ServiceState.ACTIVE, None)
    assert row.generation == 2


@pytest.mark.parametrize(
    ("action", "fields", "reason"),
    [
        (Action.CREATE, {"product_id": "99"}, "unmapped_product"),
        (Action.CREATE, {}, "unmapped_product"),
        (Action.CHANGE_PACKAGE, {"product_id": "99"}, "unmapped_product"),
        (Action.CHANGE_PACKAGE, {"product_id": "1", "tier_key": "platinum"}, "unknown_tier"),
    ],
    ids=["create-unmapped", "create-no-product", "change-unmapped", "change-unknown-tier"],
)
def test_a_bad_package_fails_the_event(app, db, action, fields, reason):
    """The aspect is stored (a fixed config can apply it), but no job is due."""
    seed(app, ServiceState.ACTIVE, job_due_at=T0)
    event_id = record(app, billing(action, **fields))
    event = db.get(Event, event_id)
    row = service(db)
    assert (event.status, event.reason, event.finished_at) == (EventStatus.FAILED, reason, NOW)
    assert event.message
    assert (row.last_reason, row.last_message) == (reason, event.message)
    assert row.job_due_at is None
    assert row.generation == event.generation == 5
    assert (row.product_id, row.tier_key) == (fields.get("product_id"), fields.get("tier_key"))


def test_a_tier_key_wins_over_the_product(app, db):
    seed(app, ServiceState.ACTIVE)
    event_id = record(app, billing(Action.CHANGE_PACKAGE, product_id="99", tier_key="agency"))
    assert db.get(Event, event_id).status is EventStatus.QUEUED
    assert service(db).tier_key == "agency"


def test_an_earlier_due_job_is_kept(app, db):
    seed(app, ServiceState.ACTIVE, job_due_at=T0)
    record(app, billing(Action.SUSPEND))
    assert service(db).job_due_at == T0


def test_an_ignored_event_is_stored_without_a_service(app, db):
    ignored = Ignored("AfterModuleCancel", "100", "a cancel at the end of the term", {"x": 1})
    event_id = record(app, ignored)
    event = db.get(Event, event_id)
    assert (event.status, event.reason) == (EventStatus.IGNORED, "not_provisioning")
    assert (event.action, event.service_id, event.service_ref) == (None, None, "100")
    assert (event.native_event, event.message) == ("AfterModuleCancel", ignored.message)
    assert (event.occurred_at, event.finished_at, event.payload) == (NOW, NOW, {"x": 1})
    assert db.scalar(select(func.count()).select_from(Service)) == 0


def test_find_event(app):
    rt = runtime(app)
    with rt.transaction() as session:
        assert find_event(session, "whmcs", "wh-1", DIGEST) is None
    event_id = record(app, billing(Action.SUSPEND))
    with rt.transaction() as session:
        found = find_event(session, "whmcs", "wh-1", DIGEST)
        assert found is not None
        assert (found.id, found.status) == (event_id, EventStatus.QUEUED)
        assert find_event(session, "blesta", "wh-1", "b" * 64) is None
        assert find_event(session, "whmcs", "wh-2", DIGEST) is None


def test_find_event_with_another_body_is_a_conflict(app):
    event_id = record(app, billing(Action.SUSPEND))
    with runtime(app).transaction() as session, pytest.raises(IdempotencyConflictError) as caught:
        find_event(session, "whmcs", "wh-1", "b" * 64)
    assert caught.value.reason == "idempotency_conflict"
    assert caught.value.http_status == 422
    assert f"event {event_id}" in caught.value.message
