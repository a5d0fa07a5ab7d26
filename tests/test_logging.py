"""bridge.logging: one redaction filter on every record, and JSON lines with the event's
fields when logging.json is true."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge.logging import (
    JsonFormatter,
    RedactingFilter,
    configure_logging,
    escape_text,
    redact_text,
)
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


# ---- control characters never reach a log line or a terminal (issue 11, item 9) -----------

EVIL = "a\nINFO fake line\x1b[31m"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (EVIL, "a\\nINFO fake line\\x1b[31m"),
        ("tab\tcr\r bell\x07 del\x7f c1\x9b", "tab\\tcr\\r bell\\x07 del\\x7f c1\\x9b"),
        ("line\u2028sep \u202egnp.exe", "line\\u2028sep \\u202egnp.exe"),
        ("ordinary text, unchanged: é ü 名前", "ordinary text, unchanged: é ü 名前"),
    ],
)
def test_escape_text_makes_control_characters_visible(text, shown):
    assert escape_text(text) == shown


def test_a_login_form_username_cannot_forge_a_log_line(client, capfd):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")  # the text format gunicorn's workers write
        page = client.get("/admin/login")
        token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
        response = client.post(
            "/admin/login", data={"email": EVIL, "password": "x", "csrf_token": token}
        )
        err = capfd.readouterr().err
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert response.status_code == 401
    (line,) = [x for x in err.splitlines() if "console login refused" in x]
    assert "email=a\\nINFO fake line\\x1b[31m reason=invalid_login" in line
    assert "\x1b" not in err
    assert not any(x.startswith("INFO fake line") for x in err.splitlines())


def test_a_traceback_keeps_its_lines_but_none_passes_for_a_record():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("tests.logging.traceback")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(EVIL)
        except ValueError:
            logger.exception("failed for %s", EVIL)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert "failed for a\\nINFO fake line\\x1b[31m" in lines[0]
    assert all(line.startswith("  ") for line in lines[1:])  # only the first is a record
    assert "\x1b" not in stream.getvalue()
    assert "  ValueError: a" in lines and "  INFO fake line\\x1b[31m" in lines


def test_cli_tables_escape_every_cell(capsys):
    from bridge.cli.base import table

    table("Staff", ("e-mail", "role"), [(EVIL, "viewer"), ("b@example.com", "admin")])
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "a\\nINFO fake line\\x1b[31m  viewer" in out
    assert len(out.splitlines()) == 5  # title, header, two rows, blank line


def test_gunicorn_access_lines_have_no_query_and_no_control_characters(tmp_path, monkeypatch):
    import runpy
    from datetime import timedelta
    from pathlib import Path
    from types import SimpleNamespace

    from gunicorn.config import Config

    # gunicorn.conf.py makes a metrics folder unless one is set: keep this process's as it is
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    cfg = Config()
    log_file = tmp_path / "access.log"
    cfg.set("accesslog", str(log_file))
    cfg.set("access_log_format", conf["access_log_format"])
    logger = conf["logger_class"](cfg)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/admin/events%0aINFO%20fake?token=mbst_secret123",
        "PATH_INFO": "/admin/events\nINFO fake\x1b[31m",
        "QUERY_STRING": "token=mbst_secret123",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_REFERER": "https://bridge.example/admin/events?email=customer@example.com",
        "HTTP_USER_AGENT": "curl\x1b[2J",
    }
    response = SimpleNamespace(status="200 OK", sent=12, headers=[])
    try:
        logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
    finally:
        for gunicorn_log in (logger.access_log, logger.error_log):
            for handler in gunicorn_log.handlers[:]:
                handler.close()
                gunicorn_log.removeHandler(handler)
    text = log_file.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1
    assert '"GET /admin/events\\nINFO fake\\x1b[31m HTTP/1.1" 200 12' in text
    assert "mbst_secret123" not in text and "customer@example.com" not in text
    assert "\x1b" not in text
