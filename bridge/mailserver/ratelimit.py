"""One gate in front of the mail server, shared by every process using the same database.

Each call takes the next free slot (`next_slot_at`, spaced 1/rate apart) in a row-locked
transaction, then waits for it, so calls across gunicorn workers, `bridge worker` and the CLI
never exceed `mailserver.rate_limit_per_s`. A 429 pushes `blocked_until` for everyone; a run
of failures opens the circuit (`open_until`) so a sick server gets a pause, not a storm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge import metrics
from bridge.db import read_only
from bridge.mailserver.errors import TransientError
from bridge.models import Gate

log = logging.getLogger(__name__)

#: Slots are spaced a little wider than 1/rate so jitter in when a call really leaves
#: cannot push two calls into the same second.
SPACING_MARGIN = 1.10
FAILURES_TO_OPEN = 5
FIRST_COOLDOWN_S = 15.0
MAX_COOLDOWN_S = 300.0
DEFAULT_RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class GateState:
    """A snapshot for health checks and metrics."""

    failures: int
    open_until: float
    blocked_until: float

    def circuit_open(self, now: float) -> bool:
        """True while calls are refused without trying."""
        return self.open_until > now


class DeadlineExceeded(TransientError):
    """The next free slot comes after the caller's deadline."""


class RateLimiter:
    """Cross-process rate limit and circuit breaker over a database row."""

    def __init__(
        self,
        engine: Engine,
        key: str,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.key = key
        self.interval = SPACING_MARGIN / rate_per_s
        self.clock = clock
        self.sleep = sleep
        self.waited_s = 0.0
        self._row_ready = False

    def _ensure_row(self) -> None:
        if self._row_ready:
            return
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        with self.engine.begin() as conn:
            conn.execute(
                insert(Gate)
                .values(
                    key=self.key, next_slot_at=0.0, blocked_until=0.0, failures=0, open_until=0.0
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
        self._row_ready = True

    def _locked_row(self, conn: Connection) -> Row[Any]:
        return conn.execute(
            select(Gate.__table__).where(Gate.key == self.key).with_for_update()
        ).one()

    def acquire(self, deadline: float | None = None) -> None:
        """Take the next slot and wait for it; raise TransientError instead of hammering."""
        self._ensure_row()
        with self.engine.begin() as conn:
            row = self._locked_row(conn)
            now = self.clock()
            if row.open_until > now:
                raise TransientError(
                    "circuit_open",
                    f"the mail server failed {row.failures} times in a row; calls pause "
                    f"for {row.open_until - now:.0f} s",
                    retry_after=row.open_until - now,
                )
            start = max(now, row.next_slot_at, row.blocked_until)
            if deadline is not None and start > deadline:
                raise DeadlineExceeded(
                    "inline_timeout", "no call slot free before the answer deadline"
                )
            conn.execute(
                update(Gate).where(Gate.key == self.key).values(next_slot_at=start + self.interval)
            )
        wait = start - now
        metrics.LIMITER_WAIT.observe(max(0.0, wait))
        if wait > 0:
            self.waited_s += wait
            self.sleep(wait)

    def succeeded(self) -> None:
        """A call worked: close the circuit."""
        with self.engine.begin() as conn:
            conn.execute(
                update(Gate)
                .where(Gate.key == self.key, Gate.failures != 0)
                .values(failures=0, open_until=0.0)
            )

    def failed(self, retry_after: float | None = None, *, throttled: bool = False) -> None:
        """A call failed transiently; a 429 also blocks every process for Retry-After."""
        self._ensure_row()
        with self.engine.begin() as conn:
            row = self._locked_row(conn)
            now = self.clock()
            values: dict[str, float | int] = {}
            if throttled:
                values["blocked_until"] = max(
                    row.blocked_until, now + (retry_after or DEFAULT_RETRY_AFTER_S)
                )
            if row.open_until > now:
                # A call that took its slot before the circuit opened: this outage is already
                # paused for. Counting it would double the pause once per call in flight, and
                # a 10 s outage would stop every call for the 300 s cap (the soak saw this).
                if values:
                    conn.execute(update(Gate).where(Gate.key == self.key).values(**values))
                return
            failures = row.failures + 1
            values["failures"] = failures
            if failures >= FAILURES_TO_OPEN:
                cooldown = min(
                    MAX_COOLDOWN_S, FIRST_COOLDOWN_S * 2 ** (failures - FAILURES_TO_OPEN)
                )
                values["open_until"] = now + cooldown
                log.warning(
                    "mail server circuit open for %.0f s after %d failures", cooldown, failures
                )
            conn.execute(update(Gate).where(Gate.key == self.key).values(**values))

    def state(self) -> GateState:
        """The current failures and pauses (a plain read: no row yet means none)."""
        with read_only(self.engine).connect() as conn:  # no write lock on SQLite
            row = conn.execute(select(Gate.__table__).where(Gate.key == self.key)).first()
        if row is None:
            return GateState(0, 0.0, 0.0)
        return GateState(row.failures, row.open_until, row.blocked_until)
