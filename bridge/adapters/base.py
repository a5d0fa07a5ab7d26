"""The adapter protocol and the redaction every adapter applies to what it stores."""

from __future__ import annotations

import re
from typing import Any, Protocol

from bridge.lifecycle import BillingEvent, Ignored


class Adapter(Protocol):
    """One module per billing system: parse its verified JSON object into an event."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent | Ignored:
        """Turn a verified JSON object into a BillingEvent, or say why it is ignored."""
        ...


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
