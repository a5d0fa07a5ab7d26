"""Standard Webhooks v1 signatures: sign and verify on raw bytes. Pure, no Flask.

Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
The signed content is "{webhook-id}.{webhook-timestamp}.{raw body}", HMAC-SHA256 with the
base64-decoded part of a `whsec_` secret; the header holds space-separated "v1,<base64>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence

SECRET_PREFIX = "whsec_"
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_ID = re.compile(r"^[\x21-\x7e]{1,255}$")


class SignatureError(Exception):
    """The request is not proven to come from the billing system; `reason` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside `whsec_<base64>` (padded or not); ValueError with a reason otherwise."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f'must start with "{SECRET_PREFIX}"')
    encoded = secret[len(SECRET_PREFIX) :]
    # Unpadded base64 is accepted on purpose, as the official Standard Webhooks libraries do.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f'the part after "{SECRET_PREFIX}" must be base64') from None
    if len(key) < 24:
        raise ValueError("the key must be at least 24 bytes (32 recommended)")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one secret."""
    key = decode_secret(secret)
    content = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _candidates(header: str) -> Iterable[bytes]:
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue
        try:
            yield base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue


def verify(
    secrets: Sequence[str],
    webhook_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance_s: int,
) -> int:
    """Check the three headers against the raw body; return the timestamp or raise.

    Any of several secrets may match, so a secret can be rotated without downtime.
    """
    if not webhook_id or not timestamp or not signature:
        missing = [
            name
            for name, value in (
                ("webhook-id", webhook_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if not value
        ]
        raise SignatureError(
            "missing_signature_headers", f"missing header(s): {', '.join(missing)}"
        )
    if not _ID.match(webhook_id):
        raise SignatureError(
            "invalid_webhook_id", "webhook-id must be 1-255 printable characters without spaces"
        )
    if not _TIMESTAMP.match(timestamp):
        raise SignatureError(
            "invalid_timestamp", "webhook-timestamp must be whole unix seconds, digits only"
        )
    sent_at = int(timestamp)
    if abs(now - sent_at) > tolerance_s:
        direction = "old" if sent_at < now else "far in the future"
        raise SignatureError(
            "timestamp_out_of_tolerance",
            f"webhook-timestamp is too {direction} (more than {tolerance_s} s from the "
            "bridge's clock); check the sender's clock",
        )
    offered = list(_candidates(signature))
    if not offered:
        raise SignatureError(
            "malformed_signature",
            'webhook-signature must hold space-separated "v1,<base64>" entries',
        )
    content = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return sent_at
    raise SignatureError(
        "signature_mismatch",
        "no signature matches a configured secret for this source; check the secret "
        "and that the body is sent unchanged",
    )
