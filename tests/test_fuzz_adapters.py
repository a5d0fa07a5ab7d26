"""No signed input gets a 500: property-based tests over both adapters, through the real app.

Payloads are arbitrary JSON, or a valid sample with one field replaced by something nasty
(huge or negative ids, NUL bytes, lone surrogates, text longer than its column, dates at the
ends of the calendar, deep nesting). Each is signed and POSTed to /hooks/<source>; the answer
is never a 5xx, an error is the JSON error shape, and an accepted event is stored. Runs on
SQLite, and on PostgreSQL with BRIDGE_TEST_DATABASE_URL (which refuses what SQLite takes:
NUL in text, strings longer than their column). See docs/design.md#input-limits.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.adapters.base import MAX_DEPTH, MAX_PASSWORD, MAX_QUANTITY
from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.lifecycle import Action, EventStatus
from bridge.models import Event
from tests.builders import post_hook

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ACTIONS = [a for a in Action if a is not Action.TRANSFER] + [Action.TRANSFER]

#: Where a valid payload gets its nasty value, per source (dotted paths; digits index lists).
WHMCS_PATHS = [
    "event",
    "occurred_at",
    "params",
    "params.serviceid",
    "params.pid",
    "params.userid",
    "params.username",
    "params.domain",
    "params.password",
    "params.clientsdetails",
    "params.clientsdetails.email",
    "params.clientsdetails.firstname",
    "params.clientsdetails.lastname",
    "params.clientsdetails.companyname",
    "params.configoptions",
    "params.configoptions.extra_mailboxes",
    "params.configoptions.spam_filter",
    "params.configoption1",
    "params.suspendreason",
    "params.target_serviceid",
    "params.previous_userid",
    "params.customfields",
    "params.customfields.notes",
]
BLESTA_PATHS = [
    "event",
    "occurred_at",
    "service_id",
    "vars",
    "vars.status",
    "vars.client_id",
    "vars.pricing_id",
    "vars.configoptions",
    "vars.configoptions.extra_mailboxes",
    "vars.password",
    "vars.suspension_reason",
    "vars.username",
    "client",
    "client.id",
    "client.email",
    "client.first_name",
    "client.last_name",
    "client.company",
    "service",
    "service.fields",
    "service.fields.0.value",
    "service.fields.1.value",
    "service.fields.0",
    "service.options",
    "service.package",
    "service.package.id",
    "service.package.meta",
    "service.package.meta.plan",
    "old_service",
    "old_service.client_id",
    "old_service.status",
    "old_service.pricing_id",
]

SPECIAL = [
    None,
    True,
    -1,
    MAX_QUANTITY + 1,
    2**63,
    10**30,
    1.5,
    "",
    "\x00",
    "mail\x00admin",
    "\ud800",
    "x" * 65,
    "x" * 256,
    "y" * 330 + "@example.org",
    "Mail1001",
    "mail 1001",
    "\u212a",  # KELVIN SIGN: lower() makes it an ASCII "k"
    "\u0661\u0662",  # Arabic-Indic digits: int() reads them
    "\u00b2",  # superscript two: isdigit() but no number
    "9" * 40,
    "line\nbreak",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2025-01-01T00:00:00",
    "a@b",
    [1, "2", None],
    {"a": {"b": "c"}},
    "A1-" + "a" * MAX_PASSWORD,
]


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
nasty = (
    st.sampled_from(SPECIAL)
    | json_scalars
    | st.integers(min_value=MAX_DEPTH - 2, max_value=MAX_DEPTH + 3).map(nested)
    | st.text(st.characters(codec="utf-8"), max_size=300)
    | json_values
)


def replace(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of payload with the value at a dotted path set (made when missing)."""
    out = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)] if int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            return out
    if isinstance(node, list):
        if int(last) < len(node):
            node[int(last)] = value
    else:
        node[last] = value
    return out


def sample(source: str, action: Action, service: int) -> dict[str, Any]:
    if source == "whmcs":
        return whmcs_envelope(action, service)
    return blesta_body(action, service)


def deliver(client, db, source: str, payload: Any, raw: bytes | None = None) -> int:
    return answer(client, db, source, payload, raw)[0]


def answer(client, db, source: str, payload: Any, raw: bytes | None = None) -> tuple[int, Any]:
    """POST it signed; check the answer's shape and, when accepted, that it was stored."""
    response = post_hook(client, source, payload, raw=raw)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"]
        assert isinstance(body.get("message"), str) and body["message"]
        assert set(body) <= {"error", "message", "errors"}
    else:
        event = db.get(Event, body["event_id"])
        assert event is not None and event.status.value == body["status"]
    return response.status_code, body


@pytest.mark.parametrize("source", ["whmcs", "blesta"])
@FUZZ
@given(payload=json_values)
def test_arbitrary_json_never_gets_a_5xx(client, db, source, payload):
    deliver(client, db, source, payload)


@pytest.mark.parametrize("source", ["whmcs", "blesta"])
@FUZZ
@given(
    action=st.sampled_from(ACTIONS),
    service=st.integers(min_value=1, max_value=50),
    data=st.data(),
    value=nasty,
)
@example(action=Action.CREATE, service=1, data=None, value="mail\x00admin")
def test_a_valid_payload_with_one_nasty_field_never_gets_a_5xx(
    client, db, source, action, service, data, value
):
    paths = WHMCS_PATHS if source == "whmcs" else BLESTA_PATHS
    path = data.draw(st.sampled_from(paths)) if data is not None else paths[6]
    payload = replace(sample(source, action, service), path, value)
    deliver(client, db, source, payload)


# Every path, every special value: the cases the random search might miss, each once.
@pytest.mark.parametrize("source", ["whmcs", "blesta"])
def test_every_special_value_in_every_field(client, db, source):
    paths = WHMCS_PATHS if source == "whmcs" else BLESTA_PATHS
    statuses = set()
    for number, path in enumerate(paths):
        for value in SPECIAL:
            payload = replace(sample(source, Action.CREATE, 100 + number), path, value)
            statuses.add(deliver(client, db, source, payload))
    assert statuses <= {200, 202, 400, 422}


@pytest.mark.parametrize("source", ["whmcs", "blesta"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 990, 5000])
def test_deep_nesting_is_refused_before_anything_walks_it(client, db, source, depth):
    """Past MAX_DEPTH is 422 by field; past the parser's own limit, 400 invalid_json."""
    head = (
        '{"event": "Renew", "service_id": 5, "vars": {"deep": '
        if source == "blesta"
        else (
            '{"event": "Renew", "occurred_at": "2025-01-01T00:00:00+00:00", "params": '
            '{"serviceid": 5, "pid": 1, "userid": 2, "customfields": {"deep": '
        )
    )
    tail = "}}" if source == "blesta" else "}}}"
    raw = (head + "[" * depth + "]" * depth + tail).encode()
    if len(raw) > 4096:  # the test config's max_body_bytes
        raw = (head + "[" * 1500 + "]" * 1500 + tail).encode()
    status = deliver(client, db, source, None, raw=raw)
    assert status in (400, 422)


@pytest.mark.parametrize("source", ["whmcs", "blesta"])
def test_a_number_too_large_for_a_float_is_refused(client, db, source):
    """JSON's 1e999 parses as infinity, which no JSON column can store."""
    raw = b'{"huge": 1e999, ' + json.dumps(sample(source, Action.RENEW, 7)).encode()[1:]
    assert deliver(client, db, source, None, raw=raw) == 422


# ---- valid input is stored ---------------------------------------------------------------

usernames = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}", fullmatch=True)
emails = st.builds(
    "{}@{}.example".format,
    st.from_regex(r"[a-z0-9+-]{1,20}(\.[a-z0-9+-]{1,20}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
)
ids = st.integers(min_value=1, max_value=2**63 - 1)
quantities = st.integers(min_value=0, max_value=MAX_QUANTITY) | st.integers(
    min_value=0, max_value=MAX_QUANTITY
).map(str)
names = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), max_size=255)
times = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2199, 1, 1), timezones=st.just(UTC)
)


@FUZZ
@given(
    username=usernames,
    email=emails,
    service=ids,
    client_id=ids,
    quantity=quantities,
    name=names,
    when=times,
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_valid_whmcs_creates_are_stored_as_sent(
    client, db, username, email, service, client_id, quantity, name, when, offset
):
    payload = whmcs_envelope(Action.CREATE, service, client=client_id)
    zone = timezone_of(offset)
    payload["occurred_at"] = when.astimezone(zone).isoformat()
    params = payload["params"]
    params.update(username=username, configoptions={"extra_mailboxes": quantity})
    params["clientsdetails"].update(email=email, firstname=name, lastname="", companyname="")
    status, body = answer(client, db, "whmcs", payload)
    assert status in (200, 202), body
    event = db.get(Event, body["event_id"])
    assert event.service_ref == str(service)
    # never later than the signature: a billing time in the future is clamped to it
    assert event.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)
    if event.status is EventStatus.QUEUED:  # not superseded by an earlier example's create
        row = event.service
        assert row.username == username.lower()
        assert row.client_ref == str(client_id)
        assert row.client_email == email
        assert row.client_name == (name or None)
        assert row.addons == {"extra_mailboxes": quantity}
    else:
        assert event.status is EventStatus.SUPERSEDED


@FUZZ
@given(username=usernames, email=emails, service=ids, quantity=quantities, name=names)
def test_valid_blesta_creates_are_stored_as_sent(
    client, db, username, email, service, quantity, name
):
    payload = blesta_body(Action.CREATE, service % 10**9 + 1)
    payload["service_id"] = service
    payload["service"]["fields"][0]["value"] = username
    payload["vars"]["configoptions"] = {"extra_mailboxes": quantity}
    payload["client"].update(email=email, first_name=name, last_name="")
    status, body = answer(client, db, "blesta", payload)
    assert (status, body.get("status")) == (202, "queued"), (
        body
    )  # the signature time only moves forward
    row = db.get(Event, body["event_id"]).service
    assert row.service_ref == str(service)
    assert row.username == username.lower()
    assert row.client_email == email
    assert row.addons == {"extra_mailboxes": quantity}


def timezone_of(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))
