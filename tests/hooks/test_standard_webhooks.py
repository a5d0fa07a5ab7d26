"""Interop with the official Standard Webhooks library (the `standardwebhooks` package), both
ways: what it signs the bridge accepts, what the bridge signs it accepts; unpadded `whsec_`
secrets included, which the library accepts on purpose."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from bridge.signature import SignatureError, decode_secret, sign, verify
from tests.conftest import BLESTA_SECRET, WHMCS_SECRET

PADDED = "whsec_" + base64.b64encode(b"interop-key-thirty-two-bytes-ok!").decode()  # ends in "="
UNPADDED = PADDED.rstrip("=")
SECRETS = {"padded": PADDED, "unpadded": UNPADDED}


def test_the_secrets_here_are_what_they_claim():
    assert PADDED.endswith("=") and not UNPADDED.endswith("=")
    assert decode_secret(PADDED) == decode_secret(UNPADDED) == b"interop-key-thirty-two-bytes-ok!"


def body_and_id() -> tuple[str, str, int]:
    text = json.dumps(whmcs_envelope(Action.CREATE, 1001), ensure_ascii=False)
    return text, f"msg_{uuid.uuid4().hex}", int(time.time())


@pytest.mark.parametrize("secret", list(SECRETS))
def test_the_bridge_accepts_what_the_library_signs(secret):
    text, msg_id, ts = body_and_id()
    header = Webhook(SECRETS[secret]).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    # either form of the same secret on the bridge's side
    for configured in SECRETS.values():
        assert verify([configured], msg_id, str(ts), header, text.encode(), time.time(), 300) == ts


@pytest.mark.parametrize("secret", list(SECRETS))
def test_the_library_accepts_what_the_bridge_signs(secret):
    text, msg_id, ts = body_and_id()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRETS[secret], msg_id, ts, text.encode()),
    }
    for configured in SECRETS.values():
        assert Webhook(configured).verify(text, headers) == json.loads(text)


def test_a_wrong_secret_is_refused_both_ways():
    text, msg_id, ts = body_and_id()
    ours = sign(WHMCS_SECRET, msg_id, ts, text.encode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": ours}
    with pytest.raises(WebhookVerificationError):
        Webhook(BLESTA_SECRET).verify(text, headers)
    theirs = Webhook(BLESTA_SECRET).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    with pytest.raises(SignatureError):
        verify([WHMCS_SECRET], msg_id, str(ts), theirs, text.encode(), time.time(), 300)


def test_a_hook_signed_by_the_library_is_applied_over_http(client):
    text, msg_id, ts = body_and_id()
    signature = Webhook(WHMCS_SECRET).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    response = client.post(
        "/hooks/whmcs",
        data=text.encode(),
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature,
        },
    )
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    assert response.get_json()["service"] == "1001"


def test_what_bridge_hooks_send_signs_verifies_with_the_library(tmp_path):
    """The CLI's own headers (as `--print` shows them), checked by the library."""
    from bridge.cli.hooks import _headers
    from bridge.config import SourceSettings

    src = SourceSettings(name="whmcs", kind="whmcs", secrets=(UNPADDED,))
    text, msg_id, _ = body_and_id()
    headers = _headers(src, msg_id, text.encode())
    assert Webhook(PADDED).verify(text, headers) == json.loads(text)
