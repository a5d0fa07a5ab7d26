"""Logging configured once; a filter keeps secrets and control characters out of every record.

`escape_text` is the one escaping of text that came from outside (billing fields, the login
form, request paths) before it reaches a log line or a terminal: the log filter here, the
CLI's tables (`bridge.cli.base.table`) and gunicorn's access log (`gunicorn.conf.py`) use it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from typing import Any

_KEYS = r"password|passwd|secret|token|auth_token|authorization|api_key"
_SECRETS = [
    # Basic/Bearer credentials first, so the credential (not the word) is what gets masked
    re.compile(r"(?P<key>\b(?:Basic|Bearer)\s+)(?P<q>)(?P<value>[A-Za-z0-9+/=._~-]{8,})"),
    # "key": "quoted value, spaces and all"
    re.compile(
        rf"""(?P<key>["']?(?:{_KEYS})["']?\s*[:=]\s*)(?P<q>["'])(?P<value>(?:\\.|(?!(?P=q)).)*)(?P=q)""",
        re.IGNORECASE,
    ),
    # key=unquoted_value
    re.compile(
        rf"""(?P<key>(?:{_KEYS})\s*[:=]\s*)(?P<q>)(?P<value>(?!\[redacted\])[^"'\s,}}&]+)""",
        re.IGNORECASE,
    ),
    re.compile(r"(?P<key>)(?P<q>)(?P<value>whsec_[A-Za-z0-9+/=]+)"),
    re.compile(r"(?P<key>)(?P<q>)(?P<value>\{SHA512-CRYPT\}\$6\$[^\s\"',]+)"),
]


#: C0 and C1 control characters (newlines, ESC, BEL, ...), DEL, the Unicode line and
#: paragraph separators and the bidirectional overrides (text that reorders itself).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_text(text: str) -> str:
    """Control characters as visible escapes (`\\n`, `\\x1b`, `\\u202e`): the text stays on
    one line and cannot move the cursor, recolour a terminal or fake another log line."""
    return _CONTROL.sub(_escape_one, text)


def _mask(match: re.Match[str]) -> str:
    quote = match.group("q")
    return f"{match.group('key')}{quote}[redacted]{quote}"


def redact_text(text: str) -> str:
    """Mask anything in a log line that looks like a password, hash, token or secret."""
    for pattern in _SECRETS:
        text = pattern.sub(_mask, text)
    return text


class RedactingFilter(logging.Filter):
    """Render each record's message once, masked and escaped (one record, one line);
    arguments never reach a handler raw. A traceback keeps its lines, each escaped and
    indented, so none of them can pass for a record of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_text(redact_text(record.getMessage()))
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                k: escape_text(redact_text(v)) if isinstance(v, str) else v
                for k, v in fields.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and not getattr(record, "_escaped_exc", False):
            lines = redact_text(record.exc_text).splitlines()
            record.exc_text = "\n".join("  " + escape_text(line) for line in lines)
            setattr(record, "_escaped_exc", True)  # noqa: B010  (not a LogRecord field)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    """Install the root handler, format and redaction filter."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"redact": {"()": RedactingFilter}},
            "formatters": {
                "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                "json": {"()": JsonFormatter},
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "filters": ["redact"],
                    "formatter": "json" if as_json else "text",
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {
                "werkzeug": {"level": "INFO"},
                "urllib3": {"level": "WARNING"},
                # otherwise seven "setup plugin" lines per process and two lines per /readyz
                "alembic": {"level": "WARNING"},
            },
        }
    )
