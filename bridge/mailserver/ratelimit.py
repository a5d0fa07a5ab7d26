"""One gate in front of the mail server, shared by every process using the same database.

Each call takes the next free slot (`next_slot_at`, spaced 1/rate apart) in a row-locked
transaction, then waits for it, so calls across gunicorn workers, `bridge worker` and the CLI
never exceed `mailserver.rate_limit_per_s`. A 429 pushes `blocked_until` for everyone; a run
of failures opens the circuit (`open_until`) so a sick server gets a pause, not a storm; a ban
opens it for the ban's length. While the circuit is open one light probe goes out every
PROBE_INTERVAL_S, so calls resume within seconds of the server answering again.

The same row holds the API token every process shares (one login per token lifetime for the
whole fleet) and a short lease that lets one process at a time log in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, or_, select, update
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
#: While the circuit is open, one call (a probe) may try this often; never longer.
PROBE_INTERVAL_S = 5.0
DEFAULT_RETRY_AFTER_S = 5.0
#: A caller never sleeps longer than this for its slot; a longer pause (a 429's Retry-After)
#: is raised as `rate_limited` so the job is retried later and a worker stays stoppable.
MAX_SLEEP_S = 3.0
BANNED = "banned"


def when(moment: float) -> str:
    """A unix time as an ISO 8601 UTC string, for messages and /readyz."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class GateState:
    """A snapshot for health checks and metrics."""

    failures: int
    open_until: float
    blocked_until: float
    open_reason: str | None = None

    def circuit_open(self, now: float) -> bool:
        """True while calls are refused without trying."""
        return self.open_until > now

    def banned(self, now: float) -> bool:
        """True while the mail server's ban lasts."""
        return self.open_reason == BANNED and self.open_until > now

    def half_open(self, now: float) -> bool:
        """The pause is over but no call has succeeded yet: the next call is a probe."""
        return self.failures >= FAILURES_TO_OPEN and self.open_until <= now

    def pause_s(self, now: float) -> float:
        """How long before any call may go (0 when one may go now)."""
        return max(0.0, self.open_until - now, self.blocked_until - now)


@dataclass(frozen=True)
class SharedToken:
    """The fleet's API token and when it must be renewed."""

    token: str = ""
    valid_to: float = 0.0
    renew_at: float = 0.0


class DeadlineExceeded(TransientError):
    """The next free slot comes after the caller's deadline."""


class RateLimiter:
    """Cross-process rate limit, circuit breaker and shared token over a database row."""

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
                    key=self.key,
                    next_slot_at=0.0,
                    blocked_until=0.0,
                    failures=0,
                    open_until=0.0,
                    token_valid_to=0.0,
                    token_renew_at=0.0,
                    login_until=0.0,
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
        self._row_ready = True

    def _locked_row(self, conn: Connection) -> Row[Any]:
        return conn.execute(
            select(Gate.__table__).where(Gate.key == self.key).with_for_update()
        ).one()

    def _set(self, conn: Connection, **values: Any) -> None:
        conn.execute(update(Gate).where(Gate.key == self.key).values(**values))

    def acquire(self, deadline: float | None = None) -> None:
        """Take the next slot and wait for it; raise TransientError instead of hammering."""
        self._ensure_row()
        with self.engine.begin() as conn:
            row = self._locked_row(conn)
            now = self.clock()
            if row.open_until > now:
                raise refusal(row, now)
            start = max(now, row.next_slot_at, row.blocked_until)
            if deadline is not None and start > deadline:
                raise DeadlineExceeded(
                    "inline_timeout", "no call slot free before the answer deadline"
                )
            if start - now > MAX_SLEEP_S:
                raise TransientError(
                    "rate_limited",
                    f"calls to the mail server are held until {when(start)} (a Retry-After "
                    "it sent, or a long queue of calls)",
                    retry_after=start - now,
                )
            values: dict[str, float] = {"next_slot_at": start + self.interval}
            if row.failures >= FAILURES_TO_OPEN:
                # Half open: this call is the probe; the others wait for its answer.
                values["open_until"] = start + PROBE_INTERVAL_S
            self._set(conn, **values)
        wait = start - now
        metrics.LIMITER_WAIT.observe(max(0.0, wait))
        if wait > 0:
            self.waited_s += wait
            self.sleep(wait)

    def succeeded(self) -> None:
        """A call worked: close the circuit (a ban stays until its end)."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(Gate)
                .where(
                    Gate.key == self.key,
                    or_(Gate.failures != 0, Gate.open_reason.is_not(None)),
                    or_(Gate.open_reason.is_(None), Gate.open_until <= now),
                )
                .values(failures=0, open_until=0.0, open_reason=None)
            )

    def failed(
        self, retry_after: float | None = None, *, throttled: bool = False, banned: bool = False
    ) -> None:
        """A call failed transiently. A 429 also blocks every process for Retry-After; a ban
        opens the circuit for its length."""
        self._ensure_row()
        with self.engine.begin() as conn:
            row = self._locked_row(conn)
            now = self.clock()
            values: dict[str, Any] = {}
            if throttled:
                values["blocked_until"] = max(
                    row.blocked_until, now + (retry_after or DEFAULT_RETRY_AFTER_S)
                )
            if banned:
                until = max(row.open_until, now + (retry_after or DEFAULT_RETRY_AFTER_S))
                values.update(open_until=until, open_reason=BANNED)
                log.warning("the mail server banned this address until %s", when(until))
                self._set(conn, **values)
                return
            failures = row.failures + 1
            values["failures"] = failures
            if failures >= FAILURES_TO_OPEN:
                # A fixed short pause, however long the outage: the next probe decides. Calls
                # already in flight when it opened push it by at most one interval.
                values["open_until"] = max(row.open_until, now + PROBE_INTERVAL_S)
                if failures == FAILURES_TO_OPEN:
                    log.warning(
                        "mail server circuit open for %.0f s after %d failures, then one "
                        "probe every %.0f s until it answers",
                        PROBE_INTERVAL_S,
                        failures,
                        PROBE_INTERVAL_S,
                    )
            self._set(conn, **values)

    def state(self) -> GateState:
        """The current failures and pauses (a plain read: no row yet means none)."""
        with read_only(self.engine).connect() as conn:  # no write lock on SQLite
            row = conn.execute(select(Gate.__table__).where(Gate.key == self.key)).first()
        if row is None:
            return GateState(0, 0.0, 0.0, None)
        return GateState(row.failures, row.open_until, row.blocked_until, row.open_reason)

    # ---- the shared token -----------------------------------------------------------------

    def shared_token(self) -> SharedToken | None:
        """The token the fleet uses now, if any."""
        self._ensure_row()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(Gate.token, Gate.token_valid_to, Gate.token_renew_at).where(
                    Gate.key == self.key
                )
            ).one()
        if not row.token:
            return None
        return SharedToken(row.token, row.token_valid_to, row.token_renew_at)

    def claim_login(self, rejected: str | None, lease_s: float) -> SharedToken | bool:
        """Either a usable token another process stored (not `rejected`, not due for
        renewal), True when this process may log in now (it holds the lease for `lease_s`),
        or False while another process is logging in."""
        self._ensure_row()
        with self.engine.begin() as conn:
            row = self._locked_row(conn)
            now = self.clock()
            if row.token and row.token != rejected and row.token_renew_at > now:
                return SharedToken(row.token, row.token_valid_to, row.token_renew_at)
            if row.login_until > now:
                return False
            self._set(conn, login_until=now + lease_s)
            return True

    def store_token(self, token: SharedToken) -> None:
        """Share a fresh token and end this process's login lease."""
        with self.engine.begin() as conn:
            self._set(
                conn,
                token=token.token,
                token_valid_to=token.valid_to,
                token_renew_at=token.renew_at,
                login_until=0.0,
            )

    def release_login(self) -> None:
        """The login failed: let the next process try."""
        with self.engine.begin() as conn:
            self._set(conn, login_until=0.0)

    def drop_token(self, token: str) -> None:
        """The server refused this token: stop sharing it (unless it was replaced already)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(Gate)
                .where(Gate.key == self.key, Gate.token == token)
                .values(token=None, token_valid_to=0.0, token_renew_at=0.0)
            )


def refusal(row: Row[Any], now: float) -> TransientError:
    """Why a call may not go while the circuit is open."""
    left = row.open_until - now
    if row.open_reason == BANNED:
        return TransientError(
            "mailserver_banned",
            f"the mail server banned us until {when(row.open_until)}; events wait and go "
            "out after it",
            retry_after=left,
        )
    return TransientError(
        "circuit_open",
        f"the mail server failed {row.failures} times in a row; the next probe is in {left:.0f} s",
        retry_after=left,
    )
