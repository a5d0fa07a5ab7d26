"""bridge.adapters.whmcs: the WHMCS connector's envelope -> BillingEvent.

See docs/design.md#whmcs-envelope.

Payloads follow WHMCS's module parameters (values invented;
https://developers.whmcs.com/provisioning-modules/module-parameters/). The HTTP answers
for these cases (422 shape, unknown event names) are in test_intake.py.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.adapters.base import REDACTED
from bridge.adapters.whmcs import WhmcsAdapter
from bridge.lifecycle import Action, BillingEvent, PayloadError, TransferKind

SIGNED_AT = 1_741_083_305
PASSWORD = "Xq7pLm2Rt9-Kw4Z"


def envelope(event: str, **params: Any) -> dict[str, Any]:
    """What the WHMCS server module posts for one module call; keyword overrides per test."""
    base: dict[str, Any] = {
        "serviceid": 1042,
        "userid": 77,
        "pid": 12,
        "serverid": 3,
        "domain": "acme-example.net",
        "username": "acmeexam",
        "producttype": "other",
        "moduletype": "mailbridge",
        "configoption1": "business",
        "configoption2": "25",
        "configoptions": {"extra_mailboxes": "4", "storage_gb": 100, "spam_filter": "Advanced"},
        "customfields": {"Admin mailbox": "postmaster"},
        "clientsdetails": {
            "id": 77,
            "userid": 77,
            "firstname": "Dana",
            "lastname": "Ruiz",
            "fullname": "Dana Ruiz",
            "companyname": "Acme Example Ltd",
            "email": "dana@acme-example.net",
            "country": "GB",
            "language": "english",
        },
        "server": True,
        "serverip": "203.0.113.10",
        "serverhostname": "bridge.example.org",
        "serverusername": "whmcs",
        "serverpassword": "Server-Side-Secret-9",
        "serveraccesshash": "abcdef0123456789",
        "serversecure": True,
        "serverport": "8443",
    }
    if event in ("CreateAccount", "ChangePassword"):
        base["password"] = PASSWORD
    if event == "SuspendAccount":
        base["suspendreason"] = "Overdue on payment"
    if event == "MoveService":
        base["previous_userid"] = 76
    if event == "TransferOwnership":
        base["target_serviceid"] = 1043
    base.update(params)
    return {
        "event": event,
        "occurred_at": "2025-03-04T10:15:02Z",
        "instance": "billing-eu-1",
        "params": base,
    }


def parse(body: dict[str, Any]) -> BillingEvent:
    return WhmcsAdapter().parse(body, SIGNED_AT)


def errors_of(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(PayloadError) as excinfo:
        parse(body)
    assert excinfo.value.reason == "invalid_payload"
    assert excinfo.value.http_status == 422
    return excinfo.value.errors or {}


@pytest.mark.parametrize(
    ("event", "action", "kind"),
    [
        ("CreateAccount", Action.CREATE, None),
        ("SuspendAccount", Action.SUSPEND, None),
        ("UnsuspendAccount", Action.UNSUSPEND, None),
        ("TerminateAccount", Action.TERMINATE, None),
        ("ChangePackage", Action.CHANGE_PACKAGE, None),
        ("ChangePassword", Action.CHANGE_PASSWORD, None),
        ("Renew", Action.RENEW, None),
        ("MoveService", Action.TRANSFER, TransferKind.CLIENT),
        ("TransferOwnership", Action.TRANSFER, TransferKind.OWNERSHIP),
    ],
)
def test_each_module_function_maps_to_its_action(event, action, kind):
    parsed = parse(envelope(event))
    assert parsed.action is action
    assert parsed.native_event == event
    assert parsed.transfer_kind is kind
    assert parsed.service_ref == "1042"


def test_create_account_fields():
    parsed = parse(envelope("CreateAccount"))
    assert parsed.service_ref == "1042"
    assert parsed.client_ref == "77"
    assert parsed.client_email == "dana@acme-example.net"
    assert parsed.client_name == "Dana Ruiz"
    assert parsed.product_id == "12"
    assert parsed.tier_key == "business"
    assert parsed.addons == {"extra_mailboxes": "4", "storage_gb": 100, "spam_filter": "Advanced"}
    assert parsed.username == "acmeexam"
    assert parsed.domain == "acme-example.net"
    assert parsed.password == PASSWORD
    assert parsed.password_field == "params.password"
    assert parsed.occurred_at == datetime(2025, 3, 4, 10, 15, 2, tzinfo=UTC)
    assert parsed.reason is None
    assert parsed.previous_client_ref is None and parsed.target_service_ref is None


def test_occurred_at_keeps_its_offset_as_an_aware_time():
    body = envelope("Renew")
    body["occurred_at"] = "2025-03-04T11:15:02+01:00"
    assert parse(body).occurred_at == datetime(2025, 3, 4, 10, 15, 2, tzinfo=UTC)
    assert parse(body).occurred_at.utcoffset() is not None


def test_occurred_at_without_a_zone_is_refused():
    body = envelope("Renew")
    body["occurred_at"] = "2025-03-04T10:15:02"
    assert "occurred_at" in errors_of(body)


def test_password_is_kept_out_of_the_repr():
    assert PASSWORD not in repr(parse(envelope("CreateAccount")))


@pytest.mark.parametrize(
    ("details", "name"),
    [
        ({"firstname": "Dana", "lastname": ""}, "Dana"),
        ({"firstname": "", "lastname": "", "companyname": "Acme Example Ltd"}, "Acme Example Ltd"),
        ({"firstname": None, "lastname": None, "companyname": None}, None),
    ],
    ids=["first-name-only", "company-fallback", "nothing"],
)
def test_client_name(details, name):
    body = envelope("SuspendAccount")
    body["params"]["clientsdetails"] = {"email": "dana@acme-example.net", **details}
    assert parse(body).client_name == name


@pytest.mark.parametrize("tier", ["", "   ", None])
def test_blank_tier_key_means_use_the_products_table(tier):
    assert parse(envelope("ChangePackage", configoption1=tier)).tier_key is None


def test_tier_key_is_trimmed():
    assert parse(envelope("ChangePackage", configoption1=" agency ")).tier_key == "agency"


def test_suspend_reason():
    assert parse(envelope("SuspendAccount")).reason == "Overdue on payment"
    assert parse(envelope("SuspendAccount", suspendreason=None)).reason is None


def test_move_service_is_a_client_transfer():
    body = envelope(
        "MoveService",
        userid=88,
        previous_userid=77,
        clientsdetails={"firstname": "Noor", "lastname": "Haddad", "email": "noor@example.org"},
    )
    parsed = parse(body)
    assert parsed.transfer_kind is TransferKind.CLIENT
    assert parsed.client_ref == "88"
    assert parsed.previous_client_ref == "77"
    assert parsed.client_email == "noor@example.org"
    assert parsed.client_name == "Noor Haddad"
    assert parsed.target_service_ref is None


def test_transfer_ownership_names_the_target_service():
    parsed = parse(envelope("TransferOwnership", target_serviceid=1043))
    assert parsed.transfer_kind is TransferKind.OWNERSHIP
    assert parsed.target_service_ref == "1043"
    assert parsed.previous_client_ref is None


def test_numeric_strings_are_accepted_for_ids():
    body = envelope(
        "TransferOwnership", serviceid="1042", pid="12", userid="77", target_serviceid="1043"
    )
    parsed = parse(body)
    assert (parsed.service_ref, parsed.product_id, parsed.client_ref) == ("1042", "12", "77")
    assert parsed.target_service_ref == "1043"
    moved = parse(envelope("MoveService", previous_userid="76"))
    assert moved.previous_client_ref == "76"


def test_empty_username_and_domain_become_none():
    parsed = parse(envelope("Renew", username="", domain=""))
    assert parsed.username is None and parsed.domain is None


def test_stored_payload_has_no_server_keys_and_no_password():
    body = envelope("CreateAccount")
    original = copy.deepcopy(body)
    payload = parse(body).payload
    params = payload["params"]
    assert not [key for key in params if key.startswith("server")]
    assert params["password"] == REDACTED
    assert PASSWORD not in repr(payload)
    assert "Server-Side-Secret-9" not in repr(payload)
    # everything else is kept as sent, for staff to read
    assert params["serviceid"] == 1042
    assert params["configoptions"] == original["params"]["configoptions"]
    assert params["clientsdetails"]["email"] == "dana@acme-example.net"
    assert payload["event"] == "CreateAccount" and payload["instance"] == "billing-eu-1"
    assert body == original, "parse() must not change the caller's dict"


def test_custom_fields_and_unread_client_details_are_not_stored():
    body = envelope("Renew", customfields={"Admin password": "Hunter2-Hunter2", "Notes": "vip"})
    body["params"]["clientsdetails"]["customfields1"] = "Hunter2-Hunter2"
    params = parse(body).payload["params"]
    # Dropped, not stored redacted by name: the adapter reads no custom field.
    assert "customfields" not in params
    assert params["clientsdetails"] == {
        "email": "dana@acme-example.net",
        "firstname": "Dana",
        "lastname": "Ruiz",
        "companyname": "Acme Example Ltd",
    }
    assert "Hunter2" not in repr(params) and "vip" not in repr(params)


@pytest.mark.parametrize(
    ("event", "remove", "errors"),
    [
        ("CreateAccount", "password", {"password": ["required for CreateAccount"]}),
        ("ChangePassword", "password", {"password": ["required for ChangePassword"]}),
        ("CreateAccount", "email", {"clientsdetails": ["email is required for CreateAccount"]}),
        ("MoveService", "email", {"clientsdetails": ["email is required for MoveService"]}),
        ("MoveService", "previous_userid", {"previous_userid": ["required for MoveService"]}),
        (
            "TransferOwnership",
            "target_serviceid",
            {"target_serviceid": ["required for TransferOwnership"]},
        ),
        (
            "CreateAccount",
            "username",
            {"username": ["required for CreateAccount (the DomainAdmin's username)"]},
        ),
    ],
)
def test_per_event_required_fields(event, remove, errors):
    body = envelope(event)
    if remove == "email":
        del body["params"]["clientsdetails"]["email"]
    else:
        del body["params"][remove]
    assert errors_of(body) == {"params": errors}


@pytest.mark.parametrize("event", ["SuspendAccount", "TerminateAccount", "Renew"])
def test_password_and_email_are_optional_elsewhere(event):
    body = envelope(event)
    del body["params"]["clientsdetails"]["email"]
    parsed = parse(body)
    assert parsed.password is None and parsed.client_email is None


def test_empty_password_counts_as_missing():
    assert errors_of(envelope("ChangePassword", password="")) == {
        "params": {"password": ["required for ChangePassword"]}
    }


@pytest.mark.parametrize("field", ["serviceid", "pid", "userid"])
def test_ids_are_required(field):
    body = envelope("SuspendAccount")
    del body["params"][field]
    assert set(errors_of(body)["params"]) == {field}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("serviceid", 0),
        ("serviceid", "10x"),
        ("pid", -1),
        ("userid", "1.5"),
        ("target_serviceid", "none"),
    ],
)
def test_bad_ids_are_errors_by_field(field, value):
    event = "TransferOwnership" if field == "target_serviceid" else "SuspendAccount"
    body = envelope(event, **{field: value})
    assert set(errors_of(body)["params"]) == {field}


def test_bad_client_email_is_an_error_by_field():
    body = envelope("CreateAccount")
    body["params"]["clientsdetails"]["email"] = "not-an-address"
    assert set(errors_of(body)["params"]["clientsdetails"]) == {"email"}


def test_configoption_values_must_be_scalars():
    body = envelope("ChangePackage", configoptions={"extra_mailboxes": ["4"], "ok": "1"})
    assert set(errors_of(body)["params"]["configoptions"]) == {"extra_mailboxes"}


def test_params_must_be_present():
    body = envelope("Renew")
    del body["params"]
    assert set(errors_of(body)) == {"params"}
