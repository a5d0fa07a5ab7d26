"""Fault injection: deterministic queued faults, seeded random errors and downtime."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from flask import Response

from nmsim.config import FAULT_KINDS

_HTML = """<html>
<head><title>{status} {reason}</title></head>
<body>
<center><h1>{status} {reason}</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
}


class FaultError(ValueError):
    """A fault specification is invalid."""


@dataclass
class FaultRule:
    """A queued fault: applies to the next `count` API requests that match."""

    kind: str
    count: int = 1
    method: str | None = None
    path: str | None = None
    after: bool = False
    ms: int = 0
    retry_after: int = 1

    def matches(self, method: str, path: str) -> bool:
        """Tell whether a request is targeted by this rule."""
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path.startswith(self.path)


def html_page(status: int) -> Response:
    """Return an nginx-like HTML error page with the given status."""
    body = _HTML.format(status=status, reason=_REASONS.get(status, "Error"))
    return Response(body, status=status, content_type="text/html")


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """Return a JSON response."""
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


class Faults:
    """The fault injection state; guarded by the simulator lock."""

    def __init__(self) -> None:
        self.queue: list[FaultRule] = []
        self.down_until: float | None = None
        self.rng = random.Random(0)

    def clear(self, seed: int = 0) -> None:
        """Drop queued faults and downtime; reseed the random generator."""
        self.queue.clear()
        self.down_until = None
        self.rng = random.Random(seed)

    def add(self, spec: Any, now: float) -> None:
        """Validate and queue one fault spec (or start downtime for kind `down`)."""
        if not isinstance(spec, dict):
            raise FaultError("a fault must be a JSON object")
        kind = spec.get("kind")
        if kind == "down":
            unknown = set(spec) - {"kind", "seconds"}
            if unknown:
                raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
            seconds = spec.get("seconds")
            if seconds is None:
                self.down_until = math.inf
            elif isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
                raise FaultError("seconds must be a positive number or null")
            else:
                self.down_until = now + seconds
            return
        if kind not in FAULT_KINDS:
            raise FaultError(f"kind must be one of {', '.join((*FAULT_KINDS, 'down'))}")
        fields = {"kind", "count", "method", "path", "after", "ms", "retry_after"}
        unknown = set(spec) - fields
        if unknown:
            raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        rule = FaultRule(**spec)
        for name in ("count", "ms", "retry_after"):
            value = getattr(rule, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FaultError(f"{name} must be an int >= 0")
        if rule.count < 1:
            raise FaultError("count must be >= 1")
        if rule.method is not None:
            if not isinstance(rule.method, str):
                raise FaultError("method must be a string")
            rule.method = rule.method.upper()
        if rule.path is not None and not isinstance(rule.path, str):
            raise FaultError("path must be a string prefix")
        if not isinstance(rule.after, bool):
            raise FaultError("after must be a boolean")
        self.queue.append(rule)

    def is_down(self, now: float) -> bool:
        """Tell whether the server is in a downtime window."""
        if self.down_until is None:
            return False
        if now >= self.down_until:
            self.down_until = None
            return False
        return True

    def pick(self, method: str, path: str, error_rate: float, error_kind: str) -> FaultRule | None:
        """Consume the fault for this request: the first matching queued rule, else random."""
        for rule in self.queue:
            if rule.matches(method, path):
                rule.count -= 1
                if rule.count == 0:
                    self.queue.remove(rule)
                return FaultRule(**{**asdict(rule), "count": 1})
        if error_rate > 0 and self.rng.random() < error_rate:
            return FaultRule(kind=error_kind)
        return None

    def to_dict(self, now: float) -> dict[str, Any]:
        """Describe queued faults and downtime."""
        down = self.is_down(now)
        return {
            "queue": [asdict(r) for r in self.queue],
            "down": down,
            "down_until": None if not down or self.down_until == math.inf else self.down_until,
        }


def render(rule: FaultRule, rate_limit_status: int) -> Response:
    """Build the response a fault rule stands for (not used for `latency` and `drop`)."""
    if rule.kind.startswith("html_"):
        return html_page(int(rule.kind[5:]))
    if rule.kind == "json_500":
        return json_response(
            {"error": "internal_error", "message": "simulated internal error"}, 500
        )
    if rule.kind == "error_200":
        return json_response(
            {"error": "internal_error", "message": "simulated API error returned with HTTP 200"},
            200,
        )
    return json_response(
        {"error": "rate_limited", "message": "rate limit exceeded (simulated)"},
        rate_limit_status,
        {"Retry-After": str(rule.retry_after)},
    )
