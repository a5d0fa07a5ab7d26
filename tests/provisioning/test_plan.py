"""Unit tests of reconcile.plan(): desired state x what the mail server reports -> steps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.lifecycle import ServiceState
from bridge.mailserver import Account, DomainAdmin, PermanentError
from bridge.provisioning.reconcile import Desired, plan

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HASH = "$6$rounds=5000$saltsalt$newhash"
OLD_HASH = "$6$rounds=5000$saltsalt$oldhash"
LIMITS = {"domains": 1, "domain_aliases": 1, "aliases": 10, "mailboxes": 5, "storage_mb": 5120}
NO_USE = {"domains": 0, "domain_aliases": 0, "aliases": 0, "mailboxes": 0, "storage_mb": 0}
USE = {"domains": 1, "domain_aliases": 0, "aliases": 4, "mailboxes": 3, "storage_mb": 900}

ACTIVE, SUSPENDED, TERMINATED = ServiceState.ACTIVE, ServiceState.SUSPENDED, ServiceState.TERMINATED


def desired(**overrides: Any) -> Desired:
    """A bound, active starter service whose DomainAdmin `acme` is in sync with `admin()`."""
    base = Desired(
        service_id=1,
        source="whmcs",
        service_ref="100",
        generation=3,
        username="acme",
        state=ACTIVE,
        limits=dict(LIMITS),
        password_hash=OLD_HASH,
        password_pending=False,
        recovery_email="owner@example.com",
        delete_at=None,
        bound=True,
        create_requested=True,
        suspended_accounts=None,
    )
    return dataclasses.replace(base, **overrides)


def admin(**overrides: Any) -> DomainAdmin:
    """The DomainAdmin `acme` as the server reports it, matching `desired()`."""
    base = DomainAdmin(
        username="acme",
        enabled=True,
        recovery_email="owner@example.com",
        domains=("acme.example",),
        limits=dict(LIMITS),
        used=dict(USE),
        password_hash=OLD_HASH,
    )
    return dataclasses.replace(base, **overrides)


def kinds(result: Any) -> list[str]:
    return [s.kind for s in result.steps]


def step(result: Any, kind: str) -> Any:
    (found,) = [s for s in result.steps if s.kind == kind]
    return found


MAILUSER = Account("acme", "MailUser", raw={"username": "acme", "perm_level": "MailUser"})
ACTUALS = {
    "missing": None,
    "enabled": admin(),
    "disabled": admin(enabled=False),
    "mailuser": MAILUSER,
}
LATER = NOW + timedelta(days=3)  # a terminated service still inside its grace period

# desired state, actual -> the step kinds, or the PermanentError reason
MATRIX: list[tuple[ServiceState | None, str, list[str] | str]] = [
    (None, "missing", "not_provisioned"),
    (None, "enabled", []),
    (None, "disabled", []),
    (None, "mailuser", "username_taken"),
    (ACTIVE, "missing", ["create"]),
    (ACTIVE, "enabled", []),
    (ACTIVE, "disabled", ["enable"]),
    (ACTIVE, "mailuser", "username_taken"),
    (SUSPENDED, "missing", ["create", "disable"]),
    (SUSPENDED, "enabled", ["disable"]),
    (SUSPENDED, "disabled", []),
    (SUSPENDED, "mailuser", "username_taken"),
    (TERMINATED, "missing", []),
    (TERMINATED, "enabled", ["disable"]),
    (TERMINATED, "disabled", []),
    (TERMINATED, "mailuser", "username_taken"),
]


@pytest.mark.parametrize(
    ("state", "actual", "expected"),
    MATRIX,
    ids=[f"{s.value if s else 'none'}-{a}" for s, a, _ in MATRIX],
)
def test_state_matrix(state, actual, expected):
    """Every desired state against every kind of account the server may hold."""
    want = desired(state=state, delete_at=LATER if state is TERMINATED else None)
    if isinstance(expected, str):
        with pytest.raises(PermanentError) as caught:
            plan(want, ACTUALS[actual], NOW)
        assert caught.value.reason == expected
        return
    result = plan(want, ACTUALS[actual], NOW)
    assert kinds(result) == expected
    assert result.blocked == {}
    assert bool(result.drift) == bool(expected)
    if state is TERMINATED:
        assert result.note.startswith("terminated" if actual == "missing" else "deletion after")


def test_create_then_disable_does_not_remember_mailboxes():
    """A DomainAdmin created suspended has no mailboxes to remember."""
    result = plan(desired(state=SUSPENDED), None, NOW)
    assert step(result, "disable").args == {"remember": False}
    assert [(d.field, d.desired, d.actual) for d in result.drift] == [("exists", True, False)]


def test_suspend_remembers_and_unsuspend_restores_over_the_domains():
    suspend = plan(desired(state=SUSPENDED), admin(), NOW)
    assert step(suspend, "disable").args == {"remember": True, "domains": ("acme.example",)}
    unsuspend = plan(desired(), admin(enabled=False), NOW)
    assert step(unsuspend, "enable").args == {"domains": ("acme.example",)}


@pytest.mark.parametrize(
    ("overrides", "actual", "reason"),
    [
        ({"username": None}, None, "not_provisioned"),
        ({"username": None}, admin(), "not_provisioned"),
        ({"limits": None}, None, "no_bundle"),
        ({"limits": None, "state": SUSPENDED}, None, "no_bundle"),
    ],
    ids=["no-username", "no-username-account-exists", "create-without-bundle", "suspended"],
)
def test_cannot_plan_without_what_a_create_needs(overrides, actual, reason):
    with pytest.raises(PermanentError) as caught:
        plan(desired(**overrides), actual, NOW)
    assert caught.value.reason == reason


def test_in_sync_service_plans_nothing():
    result = plan(desired(), admin(), NOW)
    assert result.steps == []
    assert result.drift == []
    assert result.blocked == {}
    assert result.due_at is None
    assert result.binds is None


@pytest.mark.parametrize(
    ("limits", "fields"),
    [
        ({**LIMITS, "mailboxes": 25}, {"quota_mailboxes": 25}),
        (
            {**LIMITS, "mailboxes": 25, "storage_mb": 51200, "aliases": 50},
            {"quota_mailboxes": 25, "storagequota_total": 51200, "quota_aliases": 50},
        ),
        (
            {"domains": 3, "domain_aliases": 3, "aliases": 50, "mailboxes": 25, "storage_mb": 900},
            {
                "quota_domains": 3,
                "quota_domainaliases": 3,
                "quota_aliases": 50,
                "quota_mailboxes": 25,
                "storagequota_total": 900,
            },
        ),
    ],
    ids=["one-field", "three-fields", "every-field-storage-equal-to-usage"],
)
def test_quota_changes_go_into_one_update_with_only_changed_fields(limits, fields):
    result = plan(desired(limits=limits), admin(), NOW)
    assert result.blocked == {}
    assert kinds(result) == ["update"]
    assert step(result, "update").args == {"fields": fields}
    assert {d.field for d in result.drift} == {b for b in limits if limits[b] != LIMITS[b]}


def test_quotas_recovery_email_and_password_share_one_update():
    want = desired(
        limits={**LIMITS, "mailboxes": 25},
        recovery_email="new@example.com",
        password_hash=HASH,
        password_pending=True,
    )
    result = plan(want, admin(), NOW)
    assert kinds(result) == ["update"]
    assert step(result, "update").args["fields"] == {
        "quota_mailboxes": 25,
        "recovery_email": "new@example.com",
        "password": HASH,
    }


@pytest.mark.parametrize("state", [ACTIVE, SUSPENDED], ids=str)
def test_quota_below_usage_blocks_only_the_package(state):
    """Mailboxes 5 -> 2 with 3 in use: the package waits, the rest still goes ahead."""
    want = desired(
        state=state,
        limits={**LIMITS, "mailboxes": 2, "aliases": 50},
        recovery_email="new@example.com",
    )
    result = plan(want, admin(), NOW)
    blocked = result.blocked["package"]
    assert blocked.reason == "quota_below_usage"
    assert "mailboxes: 3 in use, new limit 2" in blocked.message
    assert "aliases" not in blocked.message
    expected = ["update", "disable"] if state is SUSPENDED else ["update"]
    assert kinds(result) == expected
    assert step(result, "update").args["fields"] == {"recovery_email": "new@example.com"}


@pytest.mark.parametrize(
    ("want", "server", "fields"),
    [
        ("new@example.com", "owner@example.com", {"recovery_email": "new@example.com"}),
        ("owner@example.com", "", {"recovery_email": "owner@example.com"}),
        (None, "owner@example.com", None),
        ("", "owner@example.com", None),
    ],
    ids=["changed", "server-has-none", "billing-has-none", "billing-has-empty"],
)
def test_recovery_email(want, server, fields):
    result = plan(desired(recovery_email=want), admin(recovery_email=server), NOW)
    if fields is None:
        assert result.steps == []
    else:
        assert kinds(result) == ["update"]
        assert step(result, "update").args == {"fields": fields}
        assert [d.field for d in result.drift] == ["recovery_email"]


PASSWORDS = {  # pending, desired hash, hash the server shows -> an update carries it
    "pending-differs": (True, HASH, OLD_HASH, True),
    "pending-server-shows-none": (True, HASH, None, True),
    "pending-already-set": (True, HASH, HASH, False),
    "pending-without-hash": (True, None, OLD_HASH, False),
    "not-pending-differs": (False, HASH, OLD_HASH, False),
    "not-pending-server-shows-none": (False, HASH, None, False),
}


@pytest.mark.parametrize(
    ("pending", "hash_", "server_hash", "updates"), PASSWORDS.values(), ids=PASSWORDS.keys()
)
def test_password(pending, hash_, server_hash, updates):
    want = desired(password_pending=pending, password_hash=hash_)
    result = plan(want, admin(password_hash=server_hash), NOW)
    if updates:
        assert kinds(result) == ["update"]
        assert step(result, "update").args == {"fields": {"password": HASH}}
    else:
        assert result.steps == []
        assert result.drift == []


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_terminated_within_grace_disables_until_the_deletion(enabled):
    want = desired(state=TERMINATED, delete_at=LATER, limits={**LIMITS, "mailboxes": 25})
    result = plan(want, admin(enabled=enabled), NOW)
    assert result.due_at == LATER
    assert LATER.isoformat() in result.note
    # a terminated service gets no quota update, only the disable
    assert kinds(result) == (["disable"] if enabled else [])
    if enabled:
        assert step(result, "disable").args == {"remember": True, "domains": ("acme.example",)}


@pytest.mark.parametrize(
    "delete_at",
    [NOW - timedelta(seconds=1), NOW, None],
    ids=["after-grace", "grace-ends-now", "no-grace-recorded"],
)
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_terminated_after_grace_deletes(delete_at, enabled):
    result = plan(desired(state=TERMINATED, delete_at=delete_at), admin(enabled=enabled), NOW)
    assert kinds(result) == ["delete"]
    assert result.due_at is None
    assert [(d.field, d.desired, d.actual) for d in result.drift] == [("exists", False, True)]


@pytest.mark.parametrize("actual", list(ACTUALS))
@pytest.mark.parametrize("state", [None, ACTIVE, SUSPENDED, TERMINATED], ids=lambda s: s or "none")
def test_unbound_service_without_a_create_is_not_linked(state, actual):
    """Never touch an account the bridge did not create, adopt, import or link."""
    want = desired(state=state, bound=False, create_requested=False)
    with pytest.raises(PermanentError) as caught:
        plan(want, ACTUALS[actual], NOW)
    assert caught.value.reason == "not_linked"
    assert "whmcs:100" in caught.value.message


@pytest.mark.parametrize(
    ("state", "expected"),
    [(ACTIVE, ["create"]), (SUSPENDED, ["create", "disable"])],
    ids=["active", "suspended"],
)
def test_a_create_binds_an_unbound_service(state, expected):
    result = plan(desired(state=state, bound=False), None, NOW)
    assert (kinds(result), result.binds) == (expected, "created")
    assert plan(desired(state=state), None, NOW).binds is None


UNBOUND = {"bound": False, "create_requested": True}


OWNERS = {  # billing's recovery e-mail, created_as_email, the server's -> taken
    "recovery-differs": ("me@x.example", None, "eve@x.example", True),
    "both-differ": ("me@x.example", "old@x.example", "eve@x.example", True),
    "server-has-none": ("me@x.example", None, "", True),
    "nothing-of-ours-to-compare": (None, None, "eve@x.example", True),
    "nothing-on-either-side": (None, None, "", True),
    "recovery-matches-ignoring-case": ("me@x.example", None, "ME@X.example", False),
    "created-as-matches-ignoring-case": ("new@x.example", "Old@X.Example", "old@x.example", False),
    "created-as-matches-server-upper": ("new@x.example", "old@x.example", "OLD@X.EXAMPLE", False),
    "only-created-as": (None, "old@x.example", "old@x.example", False),
}


@pytest.mark.parametrize(
    ("ours", "created_as", "server", "taken"), OWNERS.values(), ids=OWNERS.keys()
)
def test_username_taken_before_the_binding(ours, created_as, server, taken):
    want = desired(recovery_email=ours, created_as_email=created_as, **UNBOUND)
    if taken:
        with pytest.raises(PermanentError) as caught:
            plan(want, admin(recovery_email=server), NOW)
        assert caught.value.reason == "username_taken"
    else:
        result = plan(want, admin(recovery_email=server), NOW)
        assert result.binds == "adopted"


def test_username_not_checked_once_bound():
    result = plan(desired(), admin(recovery_email="stranger@example.net"), NOW)
    assert step(result, "update").args == {"fields": {"recovery_email": "owner@example.com"}}
    assert result.binds is None


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_username_taken_is_checked_before_terminating(enabled):
    """A terminate must never delete a DomainAdmin that is not ours."""
    want = desired(state=TERMINATED, delete_at=NOW, **UNBOUND)
    with pytest.raises(PermanentError) as caught:
        plan(want, admin(enabled=enabled, recovery_email="stranger@example.net"), NOW)
    assert caught.value.reason == "username_taken"


BIG = {"domains": 3, "domain_aliases": 3, "aliases": 50, "mailboxes": 25, "storage_mb": 51200}
TARGET = admin(
    username="bigco", domains=("bigco.example", "acme.example"), limits=dict(BIG), used=dict(USE)
)
TRANSFER = {"transfer_to_ref": "200", "transfer_to_username": "bigco", "transfer_to_bound": True}


@pytest.mark.parametrize(
    "target",
    [None, Account("bigco", "MailUser", raw={})],
    ids=["target-missing", "target-is-a-mailuser"],
)
def test_transfer_to_an_unknown_target(target):
    with pytest.raises(PermanentError) as caught:
        plan(desired(**TRANSFER), admin(), NOW, target)
    assert caught.value.reason == "transfer_target_unknown"


@pytest.mark.parametrize("target", [None, TARGET], ids=["target-missing", "target-exists"])
def test_transfer_to_an_unlinked_service(target):
    want = desired(**{**TRANSFER, "transfer_to_bound": False})
    with pytest.raises(PermanentError) as caught:
        plan(want, admin(), NOW, target)
    assert caught.value.reason == "not_linked"
    assert "whmcs:200" in caught.value.message


def test_transfer_merges_both_domain_lists():
    actual = admin(domains=("acme.example", "acme.test"))
    result = plan(desired(**TRANSFER), actual, NOW, TARGET)
    assert kinds(result) == ["transfer"]
    assert step(result, "transfer").args == {
        "target": "bigco",
        "target_domains": ("bigco.example", "acme.example", "acme.test"),
        "target_before": ("bigco.example", "acme.example"),
        "moving": ("acme.example", "acme.test"),
        "owned": True,
    }
    assert [(d.field, d.desired, d.actual) for d in result.drift] == [
        ("owner_of_domains", "bigco", "acme")
    ]


def test_transfer_merges_domain_lists_whatever_the_letter_case():
    actual = admin(domains=("ACME.example", "acme.test"))
    result = plan(desired(**TRANSFER), actual, NOW, TARGET)
    assert step(result, "transfer").args["target_domains"] == (
        "bigco.example",
        "acme.example",
        "acme.test",
    )


def test_a_transfer_the_receiver_has_no_room_for_is_refused_before_any_call():
    small = dataclasses.replace(TARGET, limits=dict(LIMITS))  # 1 domain, 5 mailboxes
    with pytest.raises(PermanentError) as caught:
        plan(desired(**TRANSFER), admin(), NOW, small)
    error = caught.value
    assert error.reason == "transfer_over_quota"
    assert "domains (incl. relay domains): 1 in use + 1 moving > limit 1" in error.message
    assert "mailboxes: 3 in use + 3 moving > limit 5" in error.message
    # what the giver does not use never counts against the receiver
    roomy = dataclasses.replace(small, used=dict(NO_USE))
    assert kinds(plan(desired(**TRANSFER), admin(), NOW, roomy)) == ["transfer"]


def test_a_recovery_email_in_other_letter_case_is_no_drift():
    """A server that lower-cases e-mails would otherwise get a PATCH on every reconcile."""
    want = desired(recovery_email="Owner@Example.COM")
    result = plan(want, admin(), NOW)
    assert result.steps == [] and result.drift == []


def test_transfer_of_objects_without_domains():
    """Aliases left without a domain still need their ownership moved."""
    want = desired(**TRANSFER)
    actual = admin(domains=(), used={**NO_USE, "aliases": 2})
    result = plan(want, actual, NOW, TARGET)
    assert kinds(result) == ["transfer"]
    assert step(result, "transfer").args["moving"] == ()
    assert step(result, "transfer").args["target_domains"] == ("bigco.example", "acme.example")


def test_transfer_with_nothing_left_is_done():
    """Storage alone is not an object to transfer."""
    want = desired(**TRANSFER)
    actual = admin(domains=(), used={**NO_USE, "storage_mb": 700})
    result = plan(want, actual, NOW, TARGET)
    assert kinds(result) == ["transfer_done"]
    assert result.drift == []


def test_transfer_comes_after_the_update_and_before_a_suspend():
    want = desired(state=SUSPENDED, recovery_email="new@example.com", **TRANSFER)
    result = plan(want, admin(), NOW, TARGET)
    assert kinds(result) == ["update", "transfer", "disable"]
