"""Builders for signed webhook requests, with keyword overrides for each failure mode."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bridge.signature import sign
from tests.conftest import BLESTA_SECRET, WHMCS_SECRET

SECRETS = {"whmcs": WHMCS_SECRET, "blesta": BLESTA_SECRET}


def signed_headers(
    source: str,
    body: bytes,
    *,
    secret: str | None = None,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for a body."""
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret or SECRETS[source], msg_id, ts, body),
    }


def post_hook(
    client: FlaskClient,
    source: str,
    payload: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    **sign_options: Any,
) -> TestResponse:
    """POST a signed body (JSON of payload, or raw bytes) to /hooks/<source>."""
    body = raw if raw is not None else json.dumps(payload).encode()
    all_headers = signed_headers(source, body, **sign_options)
    all_headers.update(headers or {})
    return client.post(f"/hooks/{source}", data=body, headers=all_headers)
