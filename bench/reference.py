"""The minimal reference endpoint the intake benchmark compares the bridge with.

`POST /hooks/<any>` is a Flask view, as the bridge's is. It verifies the Standard Webhooks
HMAC on the raw body, parses the JSON, hashes the password with the C SHA512-crypt when the
event carries one (libxcrypt's `crypt_rn` through ctypes, 5,000 rounds: the cost any intake
that keeps no plaintext must pay), stores the event without the plaintext in one INSERT and
answers 202 JSON: what any safe webhook receiver must do at least. It stores in the database
the bridge uses in the same leg: a SQLite file through the stdlib sqlite3 module (WAL and
synchronous=NORMAL, the bridge's settings), or PostgreSQL through psycopg.

It is served by the same gunicorn, with the project's gunicorn.conf.py (access log on) and the
same worker count and threads as the bridge, so the ratio isolates the bridge's own cost.

    python -m bench.reference --bind 127.0.0.1:9000 --database /tmp/reference.db
    python -m bench.reference --database postgresql://postgres@127.0.0.1:5432/bench

The served module imports only the standard library, Flask and (for PostgreSQL) psycopg; the
launcher's defaults come from bench.harness, imported in main() before gunicorn replaces the
process.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import ctypes.util
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request

TOLERANCE_S = 300  # the bridge's default sources.<name>.tolerance_s
SCHEMA = """CREATE TABLE IF NOT EXISTS reference_events (
    id {id} PRIMARY KEY,
    webhook_id TEXT NOT NULL UNIQUE,
    received_at DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL,
    password_hash TEXT
)"""
INSERT = (
    "INSERT INTO reference_events (webhook_id, received_at, payload, password_hash) "
    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (webhook_id) DO NOTHING RETURNING id"
)
SALT = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def hmac_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signature_ok(key: bytes, headers: Any, body: bytes, now: float) -> bool:
    """A real Standard Webhooks v1 check: the three headers, a fresh timestamp and one
    `v1,<base64>` entry equal to HMAC-SHA256 over `{id}.{timestamp}.{raw body}`."""
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    offered = headers.get("webhook-signature", "")
    if not webhook_id or not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    content = f"{webhook_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", entry) for entry in offered.split())


class SHA512Crypt:
    """libxcrypt's crypt_rn through ctypes (the call releases the GIL), as the bridge uses."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("crypt")
        if name is None:
            raise SystemExit("the reference needs the system's libcrypt (libxcrypt)")
        self.crypt_rn = ctypes.CDLL(name).crypt_rn
        self.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self.crypt_rn.restype = ctypes.c_char_p

    def __call__(self, password: str) -> str:
        salt = "".join(secrets.choice(SALT) for _ in range(16))
        data = ctypes.create_string_buffer(32768)
        hashed = self.crypt_rn(password.encode(), f"$6${salt}$".encode(), data, 32768)
        if not hashed or not hashed.startswith(b"$6$"):
            raise ValueError("password refused")
        return "{SHA512-CRYPT}" + hashed.decode()


class Store:
    """One connection per gunicorn thread, autocommit: each INSERT is its own transaction."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.postgres = database.startswith("postgresql")
        self.local = threading.local()
        self.connection().execute(SCHEMA.format(id="BIGSERIAL" if self.postgres else "INTEGER"))
        self.insert = INSERT.format(p="%s" if self.postgres else "?")

    def connection(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.postgres:
                import psycopg

                conn = psycopg.connect(self.database, autocommit=True)
            else:
                conn = sqlite3.connect(self.database, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            self.local.conn = conn
        return conn

    def add(self, webhook_id: str, payload: str, password_hash: str | None) -> int | None:
        row = (
            self.connection()
            .execute(self.insert, (webhook_id, time.time(), payload, password_hash))
            .fetchone()
        )
        return None if row is None else int(row[0])


def password_of(data: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The part of a WHMCS (`params`) or Blesta (`vars`) body holding the password, and it."""
    if isinstance(data, dict):
        for key in ("params", "vars"):
            part = data.get(key)
            if isinstance(part, dict) and isinstance(part.get("password"), str):
                return part, part["password"]
    return None, None


def create_app() -> Flask:
    """gunicorn's factory (`bench.reference:create_app()`): settings from the environment
    that main() sets, so the secret never shows in a process list."""
    key = hmac_key(os.environ["BENCH_REFERENCE_SECRET"])
    store = Store(os.environ["BENCH_REFERENCE_DATABASE"])
    crypt = SHA512Crypt()
    app = Flask("reference")

    @app.post("/hooks/<source>")
    def receive(source: str) -> Any:
        body = request.get_data(cache=False)
        if not signature_ok(key, request.headers, body, time.time()):
            return jsonify({"error": "bad_signature"}), 401
        try:
            data = json.loads(body)
        except ValueError:
            return jsonify({"error": "invalid_json"}), 400
        part, password = password_of(data)
        password_hash = None
        if part is not None and password is not None:
            password_hash = crypt(password)
            part["password"] = "[redacted]"
        event_id = store.add(request.headers["webhook-id"], json.dumps(data), password_hash)
        if event_id is None:
            return jsonify({"status": "queued", "duplicate": True}), 200
        return jsonify({"status": "queued", "event_id": event_id, "source": source}), 202

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the reference with gunicorn, exactly as the bridge is served (same config)."""
    from bench.harness import BIN, ROOT, SECRETS

    parser = argparse.ArgumentParser(
        prog="python -m bench.reference",
        description="Serve the minimal webhook receiver (Flask: HMAC check, C SHA512-crypt "
        "of a password, one INSERT) with gunicorn and the project's gunicorn.conf.py.",
    )
    parser.add_argument("--bind", default="127.0.0.1:9000", help="HOST:PORT (%(default)s)")
    parser.add_argument(
        "--database",
        required=True,
        help="a SQLite file (created when missing) or a postgresql:// URL (psycopg's form)",
    )
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
        "BENCH_REFERENCE_DATABASE": args.database.replace("postgresql+psycopg://", "postgresql://"),
        "BENCH_REFERENCE_SECRET": args.secret,
    }
    gunicorn = str(BIN / "gunicorn")
    # The same command line as Stack.start_web() gives the bridge.
    command = [
        gunicorn,
        "--config",
        str(ROOT / "gunicorn.conf.py"),
        "--chdir",
        str(ROOT),
        "bench.reference:create_app()",
    ]
    # exec, not a child: whoever started us holds gunicorn's master pid (to stop it and to
    # find its workers for their RSS).
    os.execve(gunicorn, command, env)


if __name__ == "__main__":
    main()
