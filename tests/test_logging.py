"""bridge.logging: one redaction filter on every record, and JSON lines with the event's
fields when logging.json is true."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge.logging import JsonFormatter, RedactingFilter, configure_logging, redact_text
from bridge.provisioning.outcome import log_event


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        ("login password=Secret123456A user=dana", "Secret123456A", "user=dana"),
        ("body {'password': 'Secret123456A', 'x': 1}", "Secret123456A", "'x': 1"),
        ('body {"password": "Secret123456A", "pid": 12}', "Secret123456A", '"pid": 12'),
        ('{"newpassword":"Secret123456A"}', "Secret123456A", "newpassword"),
        ("client_secret=abcdef123456&next=1", "abcdef123456", "next=1"),
        ("api_key: k-1234567890", "k-1234567890", "api_key"),
        ("auth Basic ZGFuYTpTZWNyZXQxMjM0NTZB sent", "ZGFuYTpTZWNyZXQxMjM0NTZB", "sent"),
        ("auth Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig ok", "eyJhbGciOiJIUzI1NiJ9", "ok"),
        ("key whsec_dGVzdC13aG1jcy1zZWNyZXQtb25lLTMyYnl0ZXMh", "dGVzdC13aG1jcy1zZWNyZXQ", "key"),
        ("hash {SHA512-CRYPT}$6$8wnEsuwM$Fo1Jn0Q.r/Xv8, next", "$6$8wnEsuwM", ", next"),
    ],
)
def test_redact_text_masks_secrets_and_keeps_the_rest(line, secret, kept):
    redacted = redact_text(line)
    assert secret not in redacted
    assert "[redacted]" in redacted
    assert kept in redacted


def test_redact_text_leaves_ordinary_lines_alone():
    line = "event 12 source=whmcs service=1042 action=create status=queued reason=None"
    assert redact_text(line) == line


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Basic ZGFuYTpTZWNyZXQxMjM0NTZB",
        "headers={'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig'}",
    ],
    ids=["basic", "bearer"],
)
def test_redact_text_masks_the_credential_of_an_authorization_header(line):
    redacted = redact_text(line)
    assert "ZGFuYTpTZWNyZXQxMjM0NTZB" not in redacted
    assert "eyJhbGciOiJIUzI1NiJ9" not in redacted


@pytest.mark.parametrize(
    "line",
    ['{"password": "Pass, Word 123456A"}', "{'password': 'Pass&Word}123456A'}"],
    ids=["comma-space", "ampersand-brace"],
)
def test_redact_text_masks_a_whole_quoted_password(line):
    assert "123456A" not in redact_text(line)


def test_redacting_filter_masks_a_record_built_with_args():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.passwords.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("x %s", "password=Secret123456A")
        logger.warning("login for %s with %r", "dana", {"password": "Other123456B"})
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "Secret123456A" not in output
    assert "Other123456B" not in output
    assert "WARNING x password=[redacted]" in output
    assert "login for dana with {'password': '[redacted]'}" in output


def test_redacting_filter_masks_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.passwords.traceback")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad login password=Secret123456A")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert "Secret123456A" not in stream.getvalue()
    assert "ValueError: bad login password=[redacted]" in stream.getvalue()


def test_json_lines_carry_the_event_fields_and_stay_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.provisioning.outcome")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        log_event(
            {
                "event_id": 7,
                "source": "whmcs",
                "service": "1042",
                "action": "change_password",
                "status": "failed",
                "reason": "password=Leaked123456A",
            }
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    line = json.loads(stream.getvalue())
    assert line["event_id"] == 7
    assert line["service"] == "1042"
    assert line["action"] == "change_password"
    assert line["status"] == "failed"
    assert line["level"] == "INFO"
    assert "Leaked123456A" not in stream.getvalue()
    assert line["message"].startswith("event 7 source=whmcs service=1042")


def test_configure_logging_installs_json_and_the_filter_on_the_root(capfd):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", as_json=True)
        logging.getLogger("bridge.test").info("token=abcdef123456 done")
        err = capfd.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    entry = json.loads(err[-1])
    assert entry["logger"] == "bridge.test"
    assert entry["message"] == "token=[redacted] done"
