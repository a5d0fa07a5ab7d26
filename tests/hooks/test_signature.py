"""bridge.signature: Standard Webhooks v1 sign/verify, one test per failure reason.

Pure module tests: no Flask, no database. The HTTP side is in test_intake.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.signature import SignatureError, decode_secret, sign, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NOW = 1_741_083_302  # 2025-03-04 10:15:02 UTC
MSG_ID = "msg_2tXq8c1ZbJmN4pVr"
BODY = b'{"event": "SuspendAccount", "params": {"serviceid": 1042}}'


def check(
    signature: str | None,
    *,
    secrets: tuple[str, ...] = (SECRET,),
    webhook_id: str | None = MSG_ID,
    timestamp: str | None = str(NOW),
    body: bytes = BODY,
    now: float = NOW,
    tolerance_s: int = 300,
) -> int:
    """verify() with defaults that pass, so each test changes only what it is about."""
    return verify(secrets, webhook_id, timestamp, signature, body, now, tolerance_s)


def reason_of(**kwargs: object) -> str:
    """The SignatureError reason for a verify() call that must fail."""
    kwargs.setdefault("signature", sign(SECRET, MSG_ID, NOW, BODY))
    with pytest.raises(SignatureError) as excinfo:
        check(**kwargs)  # type: ignore[arg-type]
    return excinfo.value.reason


def test_sign_then_verify_returns_the_timestamp():
    header = sign(SECRET, MSG_ID, NOW, BODY)
    assert header.startswith("v1,")
    assert len(base64.b64decode(header[3:], validate=True)) == 32  # one SHA-256 digest
    assert check(header) == NOW


def test_known_answer_from_the_standard_webhooks_spec():
    """The published example, recomputed here with hmac/hashlib/base64 only."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), hashlib.sha256)
    expected = "v1," + base64.b64encode(digest.digest()).decode()

    assert expected == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="  # the spec's value
    assert sign(secret, msg_id, timestamp, body) == expected
    assert verify([secret], msg_id, str(timestamp), expected, body, timestamp, 300) == timestamp


@pytest.mark.parametrize(
    ("missing", "header"),
    [
        ("webhook_id", "webhook-id"),
        ("timestamp", "webhook-timestamp"),
        ("signature", "webhook-signature"),
    ],
)
def test_each_missing_header_is_named(missing, header):
    with pytest.raises(SignatureError, match=f"missing header\\(s\\): {header}$") as excinfo:
        check(**{"signature": sign(SECRET, MSG_ID, NOW, BODY), missing: None})
    assert excinfo.value.reason == "missing_signature_headers"


def test_all_missing_headers_are_listed():
    with pytest.raises(SignatureError, match="webhook-id, webhook-timestamp, webhook-signature"):
        check(None, webhook_id="", timestamp=None)


@pytest.mark.parametrize(
    "webhook_id",
    ["has space", "tab\there", "x" * 256, "msg_caf\u00e9"],
    ids=["space", "tab", "256-chars", "non-ascii"],
)
def test_invalid_webhook_id(webhook_id):
    assert reason_of(webhook_id=webhook_id) == "invalid_webhook_id"


def test_webhook_id_of_255_printable_characters_is_fine():
    webhook_id = "!~" + "x" * 253
    assert check(sign(SECRET, webhook_id, NOW, BODY), webhook_id=webhook_id) == NOW


@pytest.mark.parametrize(
    "timestamp",
    ["soon", "1741083302.0", "1741083302.5", "-5", "+1741083302", "1.7e9", " 1741083302"],
    ids=["word", "fraction-zero", "fraction", "negative", "plus-sign", "exponent", "space"],
)
def test_invalid_timestamp(timestamp):
    assert reason_of(timestamp=timestamp) == "invalid_timestamp"


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_within_tolerance_is_accepted(offset):
    """The boundary itself is inside: exactly tolerance_s away in either direction passes."""
    sent = NOW + offset
    assert check(sign(SECRET, MSG_ID, sent, BODY), timestamp=str(sent), tolerance_s=300) == sent


@pytest.mark.parametrize(
    ("offset", "words"),
    [(-301, "too old"), (301, "too far in the future")],
    ids=["past", "future"],
)
def test_timestamp_one_second_past_tolerance_is_refused(offset, words):
    sent = NOW + offset
    with pytest.raises(SignatureError, match=words) as excinfo:
        check(sign(SECRET, MSG_ID, sent, BODY), timestamp=str(sent), tolerance_s=300)
    assert excinfo.value.reason == "timestamp_out_of_tolerance"


def test_tolerance_is_per_call():
    sent = NOW - 31
    header = sign(SECRET, MSG_ID, sent, BODY)
    assert check(header, timestamp=str(sent), tolerance_s=31) == sent
    with pytest.raises(SignatureError, match="more than 30 s"):
        check(header, timestamp=str(sent), tolerance_s=30)


@pytest.mark.parametrize(
    "header",
    [
        "v1" + sign(SECRET, MSG_ID, NOW, BODY)[3:],  # comma dropped
        "v2" + sign(SECRET, MSG_ID, NOW, BODY)[2:],  # a version we do not speak
        "v1,not*base64!",
        "v1,abc",  # base64 with bad padding
        "   ",
    ],
    ids=["no-comma", "wrong-version", "bad-base64", "bad-padding", "blank"],
)
def test_malformed_signature_header(header):
    assert reason_of(signature=header) == "malformed_signature"


def test_signature_of_another_secret_is_a_mismatch():
    with pytest.raises(SignatureError, match="no signature matches") as excinfo:
        check(sign(OTHER_SECRET, MSG_ID, NOW, BODY))
    assert excinfo.value.reason == "signature_mismatch"


def test_well_formed_but_empty_signature_is_a_mismatch():
    assert reason_of(signature="v1,") == "signature_mismatch"


def test_one_matching_signature_among_several_is_enough():
    good = sign(SECRET, MSG_ID, NOW, BODY)
    header = " ".join(
        [
            sign(OTHER_SECRET, MSG_ID, NOW, BODY),  # well formed, wrong key
            "v2,ZGlmZmVyZW50LXNjaGVtZQ==",  # other version: skipped
            "v1,***",  # unreadable: skipped
            good,
        ]
    )
    assert check(header) == NOW
    assert check(f"{good}   {sign(OTHER_SECRET, MSG_ID, NOW, BODY)}") == NOW


@pytest.mark.parametrize("signer", [SECRET, OTHER_SECRET], ids=["new-secret", "old-secret"])
def test_rotation_either_configured_secret_verifies(signer):
    header = sign(signer, MSG_ID, NOW, BODY)
    assert check(header, secrets=(SECRET, OTHER_SECRET)) == NOW


def test_rotation_a_removed_secret_no_longer_verifies():
    header = sign(OTHER_SECRET, MSG_ID, NOW, BODY)
    assert reason_of(signature=header, secrets=(SECRET,)) == "signature_mismatch"


def test_decode_secret_returns_the_key():
    assert decode_secret(SECRET) == b"k" * 32
    assert decode_secret("whsec_" + base64.b64encode(b"s" * 24).decode()) == b"s" * 24


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(b"k" * 32).decode(), 'must start with "whsec_"'),
        ("whsec" + base64.b64encode(b"k" * 32).decode(), 'must start with "whsec_"'),
        ("WHSEC_" + base64.b64encode(b"k" * 32).decode(), 'must start with "whsec_"'),
        ("whsec_not*base64*at*all", "must be base64"),
        # unpadded base64 is fine (see test_standard_webhooks.py); a length of 4n+1 never is
        ("whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("=") + "AA", "must be base64"),
        ("whsec_" + base64.b64encode(b"k" * 23).decode(), "at least 24 bytes"),
        ("whsec_", "at least 24 bytes"),
    ],
    ids=[
        "no-prefix",
        "no-underscore",
        "upper-case",
        "bad-base64",
        "bad-length",
        "23-bytes",
        "empty",
    ],
)
def test_decode_secret_errors(secret, message):
    with pytest.raises(ValueError, match=message):
        decode_secret(secret)


# Webhook ids as the verifier accepts them: 1-255 printable ASCII characters, no space.
webhook_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255
)
timestamps = st.integers(min_value=0, max_value=10**12 - 1)


@settings(deadline=None)
@given(
    webhook_id=webhook_ids,
    timestamp=timestamps,
    body=st.binary(max_size=512),
    changed=st.sampled_from(["webhook_id", "timestamp", "body"]),
    data=st.data(),
)
def test_changing_any_one_signed_part_breaks_the_signature(
    webhook_id, timestamp, body, changed, data
):
    header = sign(SECRET, webhook_id, timestamp, body)
    parts = {"webhook_id": webhook_id, "timestamp": timestamp, "body": body}
    assert verify([SECRET], webhook_id, str(timestamp), header, body, timestamp, 1) == timestamp

    strategy = {"webhook_id": webhook_ids, "timestamp": timestamps, "body": st.binary()}[changed]
    parts[changed] = data.draw(strategy.filter(lambda v: v != parts[changed]), label=changed)
    with pytest.raises(SignatureError) as excinfo:
        verify(
            [SECRET],
            parts["webhook_id"],
            str(parts["timestamp"]),
            header,
            parts["body"],
            parts["timestamp"],  # the clock agrees with the (new) timestamp
            1,
        )
    assert excinfo.value.reason == "signature_mismatch"
