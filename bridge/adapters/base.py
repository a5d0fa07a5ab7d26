"""The adapter protocol, the input limits every adapter holds a payload to, and the redaction
applied to what it stores (docs/design.md#input-limits)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from marshmallow import ValidationError, fields, validate

from bridge.lifecycle import BillingEvent, Ignored, PayloadError


class Adapter(Protocol):
    """One module per billing system: parse its verified JSON object into an event."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent | Ignored:
        """Turn a verified JSON object into a BillingEvent, or say why it is ignored."""
        ...


# ---- input limits --------------------------------------------------------------------------

#: Nesting of objects and arrays in a payload; the deepest real one (a Blesta service field)
#: is 4 levels.
MAX_DEPTH = 16
#: Billing ids (service, client, product): positive and within a 64-bit integer.
MAX_ID = 2**63 - 1
#: An add-on quantity (units of one configurable option).
MAX_QUANTITY = 100_000
#: Configurable options per event, and the length of a name or a chosen value.
MAX_OPTIONS = 200
MAX_OPTION_TEXT = 255
#: A password long enough for any passphrase; the hash's cost grows with the length.
MAX_PASSWORD = 128
#: RFC 5321 limits a forward path to 256 octets, so an address to 254 characters.
MAX_EMAIL = 254
#: The earliest billing time taken (anything older is a clock or data error).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: The NMS's usernames: a letter or digit, then letters, digits and . _ + @ - (128 at most).
#: Stored in lower case (the NMS's own form; the bridge matches usernames ignoring case).
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}")
USERNAME_RULE = (
    "must be 1-128 letters, digits and . _ + @ -, starting with a letter or digit "
    "(the mail server's username rule)"
)
#: What no text field may hold: NUL, a lone surrogate (not storable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: Single-line display text (names, domain, tier key) holds no control character either.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def at_path(path: list[str], messages: Any) -> dict[str, Any]:
    """Error messages nested by field path: ["vars", "password"] -> {"vars": {"password": ..}}."""
    errors: Any = messages if isinstance(messages, (list, dict)) else [messages]
    for part in reversed(path or ["_schema"]):
        errors = {part: errors}
    return dict(errors)


def check_value(field: fields.Field[Any], value: Any, path: str) -> Any:
    """One value read from a payload, checked by a field; PayloadError naming its path.
    None or "" is absent (None); a number where text is expected is taken as its digits."""
    if value is None or value == "":
        return None
    if isinstance(field, fields.String) and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return field.deserialize(value)
    except ValidationError as exc:
        raise PayloadError(at_path(path.split("."), exc.messages)) from None


def check_json(body: Any) -> None:
    """Refuse (PayloadError) what no billing system sends and no database can keep: nesting
    deeper than MAX_DEPTH, text with a NUL or a lone surrogate, a number that is not finite.

    Iterative, so a deep payload costs no recursion; runs before any schema walks the body.
    """
    stack: list[tuple[Any, list[str]]] = [(body, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise PayloadError(
                    at_path(path[:MAX_DEPTH], f"nested deeper than {MAX_DEPTH} levels"),
                    f"the payload is nested deeper than {MAX_DEPTH} levels",
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                name = str(key)
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    raise PayloadError(at_path(path, "a key holds a NUL or an invalid character"))
                stack.append((item, [*path, name]))
        elif isinstance(value, str) and _UNSTORABLE.search(value):
            raise PayloadError(at_path(path, "holds a NUL or an invalid character"))
        elif isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(at_path(path, "must be a finite number"))


def _no_control(value: str) -> bool:
    if _CONTROL.search(value):
        raise ValidationError("must not contain control characters")
    return True


def _no_nul(value: str) -> bool:
    if _UNSTORABLE.search(value):
        raise ValidationError("must not contain a NUL character")
    return True


def text(max_length: int, **kwargs: Any) -> fields.String:
    """A single-line text field of at most `max_length` characters (its column's size)."""
    return fields.String(validate=[validate.Length(max=max_length), _no_control], **kwargs)


def billing_id(**kwargs: Any) -> fields.Integer:
    """A billing id: a whole number (or its digits) from 1 to MAX_ID."""
    return fields.Integer(validate=validate.Range(min=1, max=MAX_ID), **kwargs)


def _after_earliest(value: datetime) -> bool:
    # timestamp() of an aware datetime never overflows, whatever its offset and year.
    if value.timestamp() < EARLIEST.timestamp():
        raise ValidationError(f"must be after {EARLIEST.date().isoformat()}")
    return True


def billing_time(**kwargs: Any) -> fields.AwareDateTime:
    """When the billing system acted: ISO 8601 with an offset, after EARLIEST."""
    return fields.AwareDateTime(format="iso", validate=_after_earliest, **kwargs)


def clamp_time(sent: datetime | None, signed_at: int) -> datetime:
    """The billing time in UTC, never later than the signature (a clock ahead of ours, or a
    typo, must not put an event ahead of every later one); the signature time when absent."""
    if sent is None or sent.timestamp() > signed_at:
        return datetime.fromtimestamp(signed_at, UTC)
    return sent.astimezone(UTC)


def email(**kwargs: Any) -> fields.Email:
    """An e-mail address (the recovery e-mail), at most MAX_EMAIL characters."""
    return fields.Email(validate=validate.Length(max=MAX_EMAIL), **kwargs)


class Username(fields.String):
    """A DomainAdmin username the NMS accepts, in lower case; "" or null when absent."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        name = super()._deserialize(value, attr, data, **kwargs)
        if name == "":
            return name
        if not USERNAME.fullmatch(name):
            raise ValidationError(USERNAME_RULE)
        return name.lower()


def username_of(value: Any) -> str:
    """A username the NMS accepts, in lower case; ValidationError otherwise."""
    if not isinstance(value, str) or not USERNAME.fullmatch(value):
        raise ValidationError(USERNAME_RULE)
    return value.lower()


class Password(fields.String):
    """A plaintext password: at most MAX_PASSWORD characters, no NUL (crypt() would cut the
    password there). The NMS policy itself is checked when it is hashed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=[validate.Length(max=MAX_PASSWORD), _no_nul], **kwargs)


class OptionValue(fields.Field[int | str | None]):
    """A configurable option: a quantity (int or digits, 0..MAX_QUANTITY) or a choice's name."""

    default_error_messages = {
        "invalid": "must be a number or a string",
        "range": f"a quantity must be a whole number from 0 to {MAX_QUANTITY}",
        "long": f"must be at most {MAX_OPTION_TEXT} characters",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return option_value(value, self.make_error)


_DIGITS = re.compile(r"\s*[0-9]+\s*")


def option_value(value: Any, fail: Callable[[str], Exception]) -> int | str | None:
    """One add-on value checked; `fail(key)` makes the error for a message key of OptionValue.
    A quantity (an int, or a string of digits as PHP sends it) must be 0..MAX_QUANTITY."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise fail("invalid")
    if isinstance(value, int):
        if not 0 <= value <= MAX_QUANTITY:
            raise fail("range")
        return value
    if _DIGITS.fullmatch(value):
        digits = value.strip()
        if len(digits) > len(str(MAX_QUANTITY)) or int(digits) > MAX_QUANTITY:
            raise fail("range")
        return value
    if len(value) > MAX_OPTION_TEXT:
        raise fail("long")
    _no_control(value)
    return value


def options(**kwargs: Any) -> fields.Dict:
    """Configurable options: name -> quantity or chosen value, at most MAX_OPTIONS of them."""
    return fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=MAX_OPTION_TEXT), _no_control]),
        values=OptionValue(allow_none=True),
        validate=validate.Length(max=MAX_OPTIONS),
        **kwargs,
    )


# ---- what is stored ------------------------------------------------------------------------

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"pass|secret|token|accesshash|api_?key", re.IGNORECASE)


def redact(value: Any) -> Any:
    """A copy of a payload with every secret-looking value replaced.

    Keys that look like secrets are masked; Blesta-style service fields flagged
    `encrypted` have their value masked too (Blesta sends them already decrypted).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        encrypted = str(value.get("encrypted", "0")) in ("1", "true", "True") or bool(
            _SECRET_KEY.search(str(value.get("key", "")))  # {"key": "x_password", "value": ...}
        )
        if value.get("option_type") == "password" and value.get("option_value"):
            value = {**value, "option_value": REDACTED}
        for key, item in value.items():
            if _SECRET_KEY.search(str(key)) and item not in (None, ""):
                out[key] = REDACTED
            elif encrypted and key == "value":
                out[key] = REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def by_field(messages: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """marshmallow's error messages, always keyed by field (a top-level list under _schema)."""
    return messages if isinstance(messages, dict) else {"_schema": messages}
