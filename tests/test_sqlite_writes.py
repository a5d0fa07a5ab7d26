"""SQLite write transactions of one process queue on the bridge's own lock (bridge/db.py)
instead of failing or sleeping in SQLite's busy handler."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from bridge.db import make_engine

THREADS, WRITES = 8, 40


def test_writers_in_one_process_take_turns_without_sqlites_busy_wait(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        # SQLite's own wait off: a writer that met the lock held would fail at once.
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE hits (thread INTEGER, n INTEGER)"))
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(number: int) -> None:
        start.wait()
        try:
            for n in range(WRITES):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO hits VALUES (:t, :n)"), {"t": number, "n": n})
                    conn.execute(text("SELECT count(*) FROM hits")).scalar()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM hits")).scalar() == THREADS * WRITES
    engine.dispose()


def test_a_failed_transaction_lets_the_next_writer_in(tmp_path: Path):
    """The turn is given back on a rollback too (another thread would wait 30 s)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER NOT NULL)"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (NULL)"))
    done = threading.Event()

    def other_thread() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set()
    engine.dispose()
