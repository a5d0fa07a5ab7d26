"""bridge.passwords and the promise around it: a plaintext password never reaches a log, the
database or an HTTP answer (docs/design.md#no-plaintext-password-stored-or-logged)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from passlib.hash import sha512_crypt
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from bridge.adapters.samples import sample_password, whmcs_envelope
from bridge.db import make_engine
from bridge.lifecycle import Action
from bridge.passwords import (
    HASH_PREFIX,
    PasswordPolicyError,
    check_and_hash,
    is_hash,
    policy_violations,
)
from tests.builders import post_hook

LENGTH = "must be at least 12 characters"
UPPER = "must contain an uppercase letter"
LOWER = "must contain a lowercase letter"
DIGIT = "must contain a digit"


# Policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("Valid1Passwd", []),  # exactly 12
        ("Valid1Passw", [LENGTH]),  # 11
        ("alllowercase12", [UPPER]),
        ("ALLUPPERCASE12", [LOWER]),
        ("NoDigitsAnywhere", [DIGIT]),
        ("", [LENGTH, UPPER, LOWER, DIGIT]),
        ("shortpass1", [LENGTH, UPPER]),
        ("correct horse Battery 9", []),  # spaces and punctuation are allowed
    ],
)
def test_policy_violations(password, problems):
    assert policy_violations(password) == problems


def test_every_sample_password_meets_the_policy():
    assert all(policy_violations(sample_password()) == [] for _ in range(50))


# Hashing ------------------------------------------------------------------------------------


def test_check_and_hash_gives_a_sha512_crypt_hash_passlib_verifies():
    password = "Tr0ub4dor-and-3"
    hashed = check_and_hash(password)
    assert hashed.startswith("{SHA512-CRYPT}$6$")
    assert is_hash(hashed)
    crypt = hashed.removeprefix(HASH_PREFIX)
    assert sha512_crypt.verify(password, crypt)
    assert not sha512_crypt.verify("Tr0ub4dor-and-4", crypt)
    assert password not in hashed


def test_hashes_are_salted():
    assert check_and_hash("Same-Passw0rd-1") != check_and_hash("Same-Passw0rd-1")


def test_the_hash_is_the_plain_crypt3_form_the_mail_server_accepts():
    """Default rounds: no "rounds=" segment, so Dovecot and the NMS read it."""
    crypt = check_and_hash("Tr0ub4dor-and-3").removeprefix(HASH_PREFIX)
    assert "rounds=" not in crypt
    assert len(crypt.split("$")) == 4  # "", "6", salt, digest


def test_a_weak_password_is_refused_by_field():
    with pytest.raises(PasswordPolicyError) as excinfo:
        check_and_hash("weakpass", field="vars.password")
    error = excinfo.value
    assert error.reason == "password_policy"
    assert error.http_status == 422
    assert error.errors == {"vars.password": [LENGTH, UPPER, DIGIT]}
    assert "weakpass" not in error.message


def test_the_hash_codec_is_ready_before_any_thread_hashes():
    # A fresh process, as a new gunicorn worker: importing the module must leave passlib's
    # lazily built codec built, or the first concurrent hashes race to build it.
    probe = (
        "import bridge.passwords, passlib.utils.binary as binary; print(type(binary.h64).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Base64Engine"


@pytest.mark.parametrize(
    "value",
    ["$6$salt$digest", "{SHA512-CRYPT}$5$salt$digest", "{SSHA512}abc", "Plain-Passw0rd"],
)
def test_is_hash_refuses_other_forms(value):
    assert not is_hash(value)


# End to end: the plaintext is nowhere --------------------------------------------------------


def stored_text(database_url: str) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or every row of every table."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        main = Path(url.database or "")
        files = [main, main.with_name(main.name + "-wal"), main.with_name(main.name + "-journal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = [
                str(value)
                for table in inspect(conn).get_table_names()
                for value in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
            ]
    finally:
        engine.dispose()
    return "\n".join(rows).encode()


def test_plaintext_passwords_reach_no_log_no_database_no_answer(client, settings, caplog):
    caplog.set_level(logging.DEBUG)
    created_with, changed_to = "Kn0wn-Create-Plaintext", "Kn0wn-Change-Plaintext"
    create = post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 4242, password=created_with))
    change = post_hook(
        client, "whmcs", whmcs_envelope(Action.CHANGE_PASSWORD, 4242, password=changed_to)
    )
    assert (create.status_code, change.status_code) == (202, 202)

    stored = stored_text(settings.database_url)
    logged = caplog.text + "".join(repr(vars(record)) for record in caplog.records)
    answers = create.get_data() + change.get_data()

    # the places searched really hold this test's data
    assert b"mail4242" in stored and b"{SHA512-CRYPT}$6$" in stored
    assert "action=change_password" in logged
    assert b'"service":"4242"' in answers.replace(b" ", b"")

    for password in (created_with, changed_to):
        assert password.encode() not in stored
        assert password not in logged
        assert password.encode() not in answers
