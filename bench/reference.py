"""The minimal reference endpoint the intake benchmark compares the bridge with.

`POST /hooks/<any>` verifies the Standard Webhooks HMAC on the raw body, inserts one row
with the stdlib sqlite3 module and answers 202 JSON: what any webhook receiver must do at
least. It is served by the same gunicorn, with the project's gunicorn.conf.py and the same
worker count and threads as the bridge, so the ratio isolates the bridge's own cost.

    python -m bench.reference --bind 127.0.0.1:9000 --db /tmp/reference.db

The served module imports only the standard library (the launcher's defaults come from
bench.harness, imported in main() before gunicorn replaces the process): a worker's memory
is gunicorn plus this file, the floor the bridge's worker RSS is compared with.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

TOLERANCE_S = 300  # the bridge's default sources.<name>.tolerance_s
SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    webhook_id TEXT NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    body BLOB NOT NULL
)"""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def hmac_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signature_ok(key: bytes, environ: dict[str, Any], body: bytes, now: float) -> bool:
    """A real Standard Webhooks v1 check: the three headers, a fresh timestamp and one
    `v1,<base64>` entry equal to HMAC-SHA256 over `{id}.{timestamp}.{raw body}`."""
    webhook_id = environ.get("HTTP_WEBHOOK_ID", "")
    stamp = environ.get("HTTP_WEBHOOK_TIMESTAMP", "")
    offered = environ.get("HTTP_WEBHOOK_SIGNATURE", "")
    if not webhook_id or not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    content = f"{webhook_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", entry) for entry in offered.split())


class Reference:
    """The WSGI app: one sqlite3 connection per gunicorn thread, WAL, like the bridge's."""

    def __init__(self, db_path: str, secret: str) -> None:
        self.db_path = db_path
        self.key = hmac_key(secret)
        self.local = threading.local()
        self.connection().execute(SCHEMA)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            # Autocommit: each INSERT is its own transaction. WAL and synchronous=NORMAL are
            # the bridge's settings, so both pay the same for durability.
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self.local.conn = conn
        return conn

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST" or not environ["PATH_INFO"].startswith("/hooks/"):
            return respond(start_response, "404 Not Found", {"error": "not_found"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        now = time.time()
        if not signature_ok(self.key, environ, body, now):
            return respond(start_response, "401 Unauthorized", {"error": "bad_signature"})
        cursor = self.connection().execute(
            "INSERT INTO events (webhook_id, received_at, body) VALUES (?, ?, ?) "
            "ON CONFLICT (webhook_id) DO NOTHING",
            (environ["HTTP_WEBHOOK_ID"], now, body),
        )
        if cursor.rowcount == 0:
            return respond(start_response, "200 OK", {"status": "queued", "duplicate": True})
        return respond(start_response, "202 Accepted", {"status": "queued", "id": cursor.lastrowid})


def respond(start_response: StartResponse, status: str, answer: dict[str, Any]) -> list[bytes]:
    """A JSON answer."""
    data = json.dumps(answer).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def create_app() -> Reference:
    """gunicorn's factory (`bench.reference:create_app()`): settings from the environment
    that main() sets, so the secret never shows in a process list."""
    return Reference(os.environ["BENCH_REFERENCE_DB"], os.environ["BENCH_REFERENCE_SECRET"])


def main(argv: list[str] | None = None) -> None:
    """Serve the reference with gunicorn, exactly as the bridge is served (same config)."""
    from bench.harness import BIN, ROOT, SECRETS

    parser = argparse.ArgumentParser(
        prog="python -m bench.reference",
        description="Serve the minimal webhook receiver (HMAC check + one sqlite3 INSERT) "
        "with gunicorn and the project's gunicorn.conf.py.",
    )
    parser.add_argument("--bind", default="127.0.0.1:9000", help="HOST:PORT (%(default)s)")
    parser.add_argument("--db", required=True, help="SQLite file (created when missing)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (%(default)s)")
    parser.add_argument("--threads", type=int, default=8, help="threads each (%(default)s)")
    parser.add_argument(
        "--secret", default=SECRETS["whmcs"], help="whsec_ secret (default: the bench's whmcs)"
    )
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "BRIDGE_BIND": args.bind,
        "BRIDGE_WORKERS": str(args.workers),
        "BRIDGE_THREADS": str(args.threads),
        "BENCH_REFERENCE_DB": args.db,
        "BENCH_REFERENCE_SECRET": args.secret,
    }
    gunicorn = str(BIN / "gunicorn")
    # The same command line as Stack.start_web() gives the bridge (access log off for both).
    command = [
        gunicorn,
        "--config",
        str(ROOT / "gunicorn.conf.py"),
        "--access-logfile",
        "/dev/null",
        "--chdir",
        str(ROOT),
        "bench.reference:create_app()",
    ]
    # exec, not a child: whoever started us holds gunicorn's master pid (to stop it and to
    # find its workers for their RSS).
    os.execve(gunicorn, command, env)


if __name__ == "__main__":
    main()
