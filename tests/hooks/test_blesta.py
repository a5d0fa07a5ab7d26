"""bridge.adapters.blesta: Blesta's own service event data, as our plugin signs and posts it.

Shapes follow Blesta's service events (values invented;
https://docs.blesta.com/developers/events/): `service_id`, `vars`,
`old_service` (the service before the change), `service` (after, with `package` and its
`meta`) and `client`, under `event`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.adapters.base import REDACTED
from bridge.adapters.blesta import BlestaAdapter
from bridge.lifecycle import Action, BillingEvent, Ignored, PayloadError, TransferKind

SIGNED_AT = 1_741_083_302  # 2025-03-04 10:15:02 UTC; Blesta sends no event time of its own
MODULE_SECRET = "Stored-Module-Pass-77"
NEW_PASSWORD = "N3w-Mailbox-Passw0rd"


def service(**changes: Any) -> dict[str, Any]:
    """A Blesta service object (Services::get), as the plugin serialises it."""
    obj: dict[str, Any] = {
        "id": 215,
        "id_code": "1215",
        "client_id": 31,
        "pricing_id": 58,
        "package_group_id": 2,
        "module_row_id": 1,
        "qty": 1,
        "status": "active",
        "suspension_reason": None,
        "date_added": "2024-11-02 08:00:00",
        "date_renews": "2025-04-02 00:00:00",
        "fields": [
            {"key": "mailbridge_username", "value": "acme31", "serialized": 0, "encrypted": 0},
            {
                "key": "mailbridge_domain",
                "value": "acme-example.net",
                "serialized": 0,
                "encrypted": 0,
            },
            {"key": "mailbridge_token", "value": MODULE_SECRET, "serialized": 0, "encrypted": 1},
        ],
        "options": [
            {
                "option_id": 9,
                "option_name": "extra_mailboxes",
                "option_label": "Extra mailboxes",
                "option_type": "quantity",
                "qty": 4,
                "option_value": None,
            },
            {
                "option_id": 10,
                "option_name": "spam_filter",
                "option_label": "Spam filter",
                "option_type": "select",
                "qty": 1,
                "option_value": "advanced",
            },
        ],
        "package": {
            "id": 7,
            "name": "Business Mail 25",
            "module_id": 5,
            "meta": {"plan": "business", "storage_mb": "51200"},
        },
    }
    obj.update(changes)
    return obj


def body(event: str, vars_: dict[str, Any], *, old: dict[str, Any] | None = None, **top: Any):
    """The plugin's post: the event params plus the service after the event and the client."""
    after = service()
    return {
        "event": event,
        "service_id": 215,
        "vars": vars_,
        "old_service": old if old is not None else service(),
        "service": top.pop("service", after),
        "client": top.pop(
            "client",
            {
                "id": 31,
                "first_name": "Robin",
                "last_name": "Meier",
                "company": "Acme Example GmbH",
                "email": "robin@acme-example.net",
            },
        ),
        **top,
    }


def parse(payload: dict[str, Any]) -> BillingEvent | Ignored:
    return BlestaAdapter().parse(payload, SIGNED_AT)


def parsed_event(payload: dict[str, Any]) -> BillingEvent:
    result = parse(payload)
    assert isinstance(result, BillingEvent), result
    return result


def errors_of(payload: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(PayloadError) as excinfo:
        parse(payload)
    return excinfo.value.errors or {}


def test_suspend_after():
    vars_ = {
        "use_module": "true",
        "staff_id": None,
        "suspension_reason": "Invoice #10533 overdue",
        "date_suspended": "2025-03-04 10:15:02",
        "status": "suspended",
    }
    parsed = parsed_event(body("Services.suspendAfter", vars_))
    assert parsed.action is Action.SUSPEND
    assert parsed.native_event == "Services.suspendAfter"
    assert parsed.service_ref == "215"
    assert parsed.reason == "Invoice #10533 overdue"
    assert parsed.occurred_at == datetime(2025, 3, 4, 10, 15, 2, tzinfo=UTC)
    assert parsed.client_ref == "31"
    assert parsed.product_id == "7"
    assert parsed.tier_key == "business"
    assert parsed.username == "acme31" and parsed.domain == "acme-example.net"


@pytest.mark.parametrize(
    ("event", "action"),
    [("Services.unsuspendAfter", Action.UNSUSPEND), ("Services.renewAfter", Action.RENEW)],
)
def test_unsuspend_and_renew(event, action):
    parsed = parsed_event(body(event, {"use_module": "true", "status": "active"}))
    assert parsed.action is action
    assert parsed.reason is None


def test_add_after_active_is_a_create_with_every_field():
    vars_ = {"status": "active", "client_id": 31, "pricing_id": 58, "use_module": "true"}
    parsed = parsed_event(body("Services.addAfter", vars_))
    assert parsed.action is Action.CREATE
    assert parsed.service_ref == "215"
    assert parsed.client_ref == "31"
    assert parsed.client_email == "robin@acme-example.net"
    assert parsed.client_name == "Robin Meier"
    assert parsed.product_id == "7"
    assert parsed.tier_key == "business"
    assert parsed.addons == {"extra_mailboxes": 4, "spam_filter": "advanced"}
    assert parsed.username == "acme31"
    assert parsed.domain == "acme-example.net"
    assert parsed.password is None
    assert parsed.transfer_kind is None and parsed.previous_client_ref is None
    assert parsed.occurred_at == datetime.fromtimestamp(SIGNED_AT, UTC)


def test_add_after_pending_is_ignored():
    vars_ = {"status": "pending", "client_id": 31, "pricing_id": 58, "use_module": "false"}
    result = parse(body("Services.addAfter", vars_, old={}))
    assert isinstance(result, Ignored)
    assert result.native_event == "Services.addAfter"
    assert result.service_ref == "215"
    assert "pending" in result.message
    assert MODULE_SECRET not in repr(result.payload)


def test_edit_after_pending_to_active_is_a_create():
    """Blesta's order flow: the service is added pending, then edited to active on payment."""
    vars_ = {
        "status": "active",
        "pricing_id": 58,
        "client_id": 31,
        "configoptions": {"extra_mailboxes": 40},
        "use_module": "true",
    }
    parsed = parsed_event(body("Services.editAfter", vars_, old=service(status="pending")))
    assert parsed.action is Action.CREATE
    assert parsed.addons == {"extra_mailboxes": 40}  # vars' options win over the stored ones
    assert parsed.username == "acme31"


def test_edit_after_client_change_is_a_client_transfer():
    vars_ = {"client_id": "44", "use_module": "true"}
    new_owner = {"id": 44, "first_name": "Ayo", "last_name": "Bello", "email": "ayo@example.org"}
    payload = body("Services.editAfter", vars_, service=service(client_id=44), client=new_owner)
    parsed = parsed_event(payload)
    assert parsed.action is Action.TRANSFER
    assert parsed.transfer_kind is TransferKind.CLIENT
    assert parsed.previous_client_ref == "31"
    assert parsed.client_ref == "44"
    assert parsed.client_email == "ayo@example.org"
    assert parsed.client_name == "Ayo Bello"


def test_same_client_id_as_int_and_string_is_no_transfer():
    vars_ = {"client_id": "31", "pricing_id": "58", "use_module": "true"}
    assert isinstance(parse(body("Services.editAfter", vars_)), Ignored)


def test_edit_after_pricing_change_is_a_package_change():
    vars_ = {"pricing_id": 61, "use_module": "true"}
    upgraded = service(
        pricing_id=61, package={"id": 8, "name": "Agency", "meta": {"plan": "agency"}}
    )
    parsed = parsed_event(body("Services.editAfter", vars_, service=upgraded))
    assert parsed.action is Action.CHANGE_PACKAGE
    assert parsed.product_id == "8"
    assert parsed.tier_key == "agency"


def test_edit_after_configoptions_change_is_a_package_change():
    vars_ = {"configoptions": {"extra_mailboxes": "6"}, "use_module": "true"}
    parsed = parsed_event(body("Services.editAfter", vars_))
    assert parsed.action is Action.CHANGE_PACKAGE
    assert parsed.addons == {"extra_mailboxes": "6"}


def test_edit_after_that_changes_nothing_for_mail_is_ignored():
    vars_ = {"date_renews": "2026-04-02 00:00:00", "use_module": "true"}
    result = parse(body("Services.editAfter", vars_))
    assert isinstance(result, Ignored)
    assert "changed nothing" in result.message


def test_cancel_after_now_is_a_terminate():
    vars_ = {"status": "canceled", "date_canceled": "2025-03-04 10:15:02", "use_module": "true"}
    payload = body("Services.cancelAfter", vars_, service=service(status="canceled"))
    assert parsed_event(payload).action is Action.TERMINATE


@pytest.mark.parametrize("date_canceled", ["end_of_term", "2025-04-02 00:00:00"])
def test_scheduled_cancel_is_ignored(date_canceled):
    vars_ = {"date_canceled": date_canceled, "use_module": "true"}
    result = parse(body("Services.cancelAfter", vars_))
    assert isinstance(result, Ignored)
    assert "scheduled" in result.message


def test_change_password_needs_vars_password():
    parsed = parsed_event(body("MailBridge.changePassword", {"password": NEW_PASSWORD}))
    assert parsed.action is Action.CHANGE_PASSWORD
    assert parsed.password == NEW_PASSWORD
    assert parsed.password_field == "vars.password"
    assert parsed.payload["vars"]["password"] == REDACTED
    assert NEW_PASSWORD not in repr(parsed.payload)


@pytest.mark.parametrize("vars_", [{}, {"password": ""}, {"password": 123456789012}])
def test_change_password_without_a_password_string_is_refused(vars_):
    assert errors_of(body("MailBridge.changePassword", vars_)) == {
        "vars": {"password": ["required for MailBridge.changePassword"]}
    }


@pytest.mark.parametrize(
    ("event", "vars_", "old"),
    [
        ("Services.addAfter", {"status": "active"}, service()),
        ("Services.editAfter", {"client_id": 44}, service()),
    ],
    ids=["create", "transfer"],
)
def test_create_and_transfer_need_the_client_email(event, vars_, old):
    payload = body(event, vars_, old=old, client={"id": 44, "first_name": "Ayo"})
    assert set(errors_of(payload)) == {"client"}
    assert set(errors_of(payload)["client"]) == {"email"}


def test_create_needs_a_username_field():
    no_username = service(fields=[{"key": "mailbridge_domain", "value": "acme-example.net"}])
    payload = body("Services.addAfter", {"status": "active"}, old={}, service=no_username)
    assert errors_of(payload) == {
        "service": {"fields": ["a mailbridge_username (or username) field is required"]}
    }


def test_plain_username_and_domain_fields_are_accepted():
    fields = [{"key": "username", "value": "robin31"}, {"key": "domain", "value": "robin.example"}]
    payload = body(
        "Services.addAfter", {"status": "active"}, old={}, service=service(fields=fields)
    )
    parsed = parsed_event(payload)
    assert (parsed.username, parsed.domain) == ("robin31", "robin.example")


def test_numeric_string_service_id_is_accepted():
    payload = body("Services.suspendAfter", {"status": "suspended"})
    payload["service_id"] = "215"
    assert parsed_event(payload).service_ref == "215"


@pytest.mark.parametrize("service_id", [None, "abc", 0])
def test_bad_service_id_is_an_error_by_field(service_id):
    payload = body("Services.suspendAfter", {"status": "suspended"})
    if service_id is None:
        del payload["service_id"]
    else:
        payload["service_id"] = service_id
    assert set(errors_of(payload)) == {"service_id"}


def test_unknown_event_is_an_error_by_field():
    assert set(errors_of(body("Services.deleteAfter", {}))) == {"event"}


def test_only_the_service_fields_the_adapter_reads_are_stored():
    payload = body("Services.suspendAfter", {"status": "suspended", "mailbridge_token": "x"})
    original = copy.deepcopy(payload)
    stored = parsed_event(payload).payload
    for side in ("old_service", "service"):
        fields = {f["key"]: f["value"] for f in stored[side]["fields"]}
        # Dropped, not stored redacted: a custom field the adapter does not use is not kept.
        assert fields == {"mailbridge_username": "acme31", "mailbridge_domain": "acme-example.net"}
    assert set(stored["vars"]) == {"status"}
    assert MODULE_SECRET not in repr(stored) and "mailbridge_token" not in repr(stored)
    assert payload == original, "parse() must not change the caller's dict"


def test_unencrypted_password_field_is_redacted_too():
    fields = [
        {"key": "mailbridge_username", "value": "acme31", "encrypted": 0},
        {"key": "mailbridge_password", "value": MODULE_SECRET, "encrypted": 0},
    ]
    payload = body("Services.suspendAfter", {"status": "suspended"}, service=service(fields=fields))
    assert MODULE_SECRET not in repr(parsed_event(payload).payload)


def test_php_empty_meta_array_means_no_tier_key():
    """PHP's json_encode turns an empty array into [], not {}."""
    bare = service(package={"id": 7, "name": "Business Mail 25", "meta": []})
    payload = body("Services.suspendAfter", {"status": "suspended"}, service=bare)
    parsed = parsed_event(payload)
    assert parsed.tier_key is None
    assert parsed.product_id == "7"


def test_package_falls_back_to_the_old_service():
    payload = body("Services.suspendAfter", {"status": "suspended"}, service=None)
    parsed = parsed_event(payload)
    assert parsed.product_id == "7" and parsed.tier_key == "business"


def test_occurred_at_from_the_plugin_is_kept_but_never_after_the_signature():
    from bridge.adapters.samples import blesta_body

    signed_at = 1_800_000_000
    body = blesta_body(Action.SUSPEND, 5)
    body["occurred_at"] = "2027-01-15T08:00:00+00:00"
    event = BlestaAdapter().parse(body, signed_at)
    assert event.occurred_at == datetime(2027, 1, 15, 8, tzinfo=UTC)
    body["occurred_at"] = "2099-01-01T00:00:00+00:00"
    assert BlestaAdapter().parse(body, signed_at).occurred_at == datetime.fromtimestamp(
        signed_at, UTC
    )
