"""The shared RateLimiter over the real test database, with a fake clock and a fake sleep.

Two limiter objects on the same key stand for two processes sharing one database row.
"""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from bridge.mailserver import RateLimiter, TransientError
from bridge.mailserver.ratelimit import (
    DEFAULT_RETRY_AFTER_S,
    FAILURES_TO_OPEN,
    MAX_SLEEP_S,
    PROBE_INTERVAL_S,
    SPACING_MARGIN,
    DeadlineExceeded,
    SharedToken,
)
from bridge.models import Gate
from bridge.web import runtime

T0 = 1_700_000_000.0
EPS = 1e-6


class FakeTime:
    """A clock that only moves when told to, and a sleep that records and moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.waits.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def engine(app) -> Engine:
    """The app's engine, on a database the app fixture has just emptied."""
    return runtime(app).engine


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def limiter(engine: Engine, fake: FakeTime, rate: float = 5.0, key: str = "gate") -> RateLimiter:
    return RateLimiter(engine, key, rate, clock=fake.clock, sleep=fake.sleep)


def take(lim: RateLimiter, fake: FakeTime, deadline: float | None = None) -> float:
    """Acquire and return when the call leaves (the fake time after any wait)."""
    lim.acquire(deadline)
    return fake.now


def max_in_window(times: list[float], window: float = 1.0) -> int:
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + window - EPS) for t in ordered)


def test_consecutive_acquires_are_spaced_by_the_rate_plus_margin(engine, fake):
    rate = 5.0
    lim = limiter(engine, fake, rate)
    departures = [take(lim, fake) for _ in range(12)]

    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert min(gaps) >= SPACING_MARGIN / rate - EPS
    assert min(gaps) >= 1 / rate
    assert max_in_window(departures) <= rate
    # the first call did not wait; every later one waited exactly one interval
    assert fake.waits == pytest.approx([SPACING_MARGIN / rate] * 11)
    assert lim.waited_s == pytest.approx(sum(fake.waits))


def test_two_limiters_on_one_row_share_the_slots(engine, fake):
    """Callers that arrive together (no time passes between them) are queued 1/rate apart,
    across limiter objects as across processes."""
    rate = 4.0
    a, b = limiter(engine, fake, rate), limiter(engine, fake, rate)
    waits = []
    for lim in (a, b, a, b, b, a, a, b):
        before = len(fake.waits)
        lim.acquire()
        waited = fake.waits[before] if len(fake.waits) > before else 0.0
        waits.append(waited)
        fake.now -= waited  # everyone asked at the same instant; each waits on its own
    departures = [T0 + w for w in waits]
    gaps = [y - x for x, y in zip(departures, departures[1:], strict=False)]
    assert min(gaps) >= SPACING_MARGIN / rate - EPS
    assert max_in_window(departures) <= rate


def test_limiters_on_other_keys_do_not_wait_for_each_other(engine, fake):
    a, b = limiter(engine, fake, key="server-a"), limiter(engine, fake, key="server-b")
    a.acquire()
    b.acquire()
    assert fake.waits == []


def test_a_429_pushes_every_later_acquire_past_blocked_until(engine, fake):
    rate = 10.0
    lim, other = limiter(engine, fake, rate), limiter(engine, fake, rate)
    take(lim, fake)
    lim.failed(2, throttled=True)
    blocked_until = T0 + 2
    assert lim.state().blocked_until == pytest.approx(blocked_until)

    departures = [take(x, fake) for x in (other, lim, other, lim)]
    assert departures[0] >= blocked_until - EPS
    assert all(d >= blocked_until - EPS for d in departures)
    gaps = [y - x for x, y in zip(departures, departures[1:], strict=False)]
    assert min(gaps) >= SPACING_MARGIN / rate - EPS


def test_a_long_block_is_raised_not_slept_through(engine, fake):
    """A worker sleeping through a long Retry-After could not stop on SIGTERM (and would
    hold its service's lease): beyond MAX_SLEEP_S the caller is told when to come back."""
    lim, other = limiter(engine, fake), limiter(engine, fake)
    lim.failed(600, throttled=True)
    for x in (lim, other):
        with pytest.raises(TransientError) as caught:
            x.acquire()
        assert caught.value.reason == "rate_limited"
        assert caught.value.retry_after == pytest.approx(600)
    assert fake.waits == []
    fake.advance(600 - MAX_SLEEP_S / 2)
    assert take(lim, fake) == pytest.approx(T0 + 600)  # close enough: it waits the rest
    assert fake.waits == pytest.approx([MAX_SLEEP_S / 2])


def test_a_429_without_retry_after_blocks_for_the_default(engine, fake):
    lim = limiter(engine, fake)
    lim.failed(None, throttled=True)
    with pytest.raises(TransientError) as caught:
        lim.acquire()
    assert caught.value.retry_after == pytest.approx(DEFAULT_RETRY_AFTER_S)
    fake.advance(DEFAULT_RETRY_AFTER_S - 1)
    assert take(lim, fake) >= T0 + DEFAULT_RETRY_AFTER_S - EPS


def test_a_later_shorter_retry_after_never_shortens_the_block(engine, fake):
    lim = limiter(engine, fake)
    lim.failed(30, throttled=True)
    lim.failed(2, throttled=True)
    assert lim.state().blocked_until == pytest.approx(T0 + 30)


def test_a_plain_failure_does_not_block(engine, fake):
    lim = limiter(engine, fake)
    lim.failed(60)
    assert lim.state().blocked_until == 0
    assert take(lim, fake) == T0


def test_failures_open_the_circuit_and_success_closes_it(engine, fake):
    lim, other = limiter(engine, fake), limiter(engine, fake)
    for _ in range(FAILURES_TO_OPEN - 1):
        lim.failed()
    lim.acquire()  # still closed one failure short of the threshold
    waits_before = list(fake.waits)

    lim.failed()
    for x in (lim, other):
        with pytest.raises(TransientError) as caught:
            x.acquire()
        assert caught.value.reason == "circuit_open"
        assert caught.value.retry_after == pytest.approx(PROBE_INTERVAL_S)
    assert fake.waits == waits_before  # refused at once, no sleeping
    assert lim.state().circuit_open(fake.now)
    assert lim.state().failures == FAILURES_TO_OPEN

    other.succeeded()
    state = lim.state()
    assert (state.failures, state.open_until) == (0, 0)
    lim.acquire()


def test_after_the_pause_one_probe_goes_and_the_others_wait_for_its_answer(engine, fake):
    lim, other = limiter(engine, fake), limiter(engine, fake)
    for _ in range(FAILURES_TO_OPEN):
        lim.failed()
    fake.advance(PROBE_INTERVAL_S - 0.5)
    with pytest.raises(TransientError):
        lim.acquire()
    fake.advance(1)
    assert lim.state().half_open(fake.now)
    lim.acquire()  # the probe
    with pytest.raises(TransientError) as caught:
        other.acquire()  # while the probe is out
    assert caught.value.reason == "circuit_open"
    lim.succeeded()  # the server answers again
    other.acquire()
    assert lim.state().failures == 0


def test_the_pause_stays_short_however_long_the_outage(engine, fake):
    """Regression: the pause used to double on each failed probe (15 s, 30 s, ... 300 s),
    so provisioning resumed up to minutes after the server came back."""
    lim = limiter(engine, fake)
    for _ in range(FAILURES_TO_OPEN - 1):
        lim.failed()
    pauses = []
    for _ in range(30):  # a long outage: every probe fails
        lim.failed()
        state = lim.state()
        pauses.append(state.open_until - fake.now)
        fake.now = state.open_until + 0.01
        lim.acquire()  # the pause is over: one probe may try
    assert pauses == pytest.approx([PROBE_INTERVAL_S] * 30)
    # the outage ends: the next probe succeeds and calls flow again
    lim.succeeded()
    take(lim, fake)
    take(lim, fake)


def test_failures_of_calls_already_in_flight_do_not_lengthen_the_pause(engine, fake):
    lim = limiter(engine, fake)
    for _ in range(FAILURES_TO_OPEN):
        lim.failed()
    for _ in range(12):  # calls that had their slots before the circuit opened
        lim.failed()
    assert lim.state().open_until - fake.now == pytest.approx(PROBE_INTERVAL_S)

    fake.now = lim.state().open_until + 0.01
    lim.acquire()  # the probe after the pause
    lim.failed()  # fails: the same short pause again
    assert lim.state().open_until - fake.now == pytest.approx(PROBE_INTERVAL_S)


def test_a_ban_opens_the_circuit_for_its_length_and_says_until_when(engine, fake):
    lim, other = limiter(engine, fake), limiter(engine, fake)
    lim.failed(3600, banned=True)
    state = lim.state()
    assert state.banned(fake.now) and state.failures == 0
    for x in (lim, other):
        with pytest.raises(TransientError) as caught:
            x.acquire()
        assert caught.value.reason == "mailserver_banned"
        assert caught.value.retry_after == pytest.approx(3600)
        assert "banned us until 2023-11-14T23:13:20Z" in caught.value.message
    other.succeeded()  # a call that left before the ban and came back fine
    assert lim.state().banned(fake.now)  # does not lift the ban
    fake.advance(3600)
    take(lim, fake)  # the ban is over
    lim.succeeded()
    assert lim.state().open_reason is None


def test_the_shared_token_one_login_at_a_time(engine, fake):
    """Two processes need a token: the first takes the login lease, the second waits for
    it, then both use the one the first stored."""
    a, b = limiter(engine, fake), limiter(engine, fake)
    assert a.shared_token() is None
    assert a.claim_login(None, 40) is True
    assert b.claim_login(None, 40) is False  # a is logging in
    a.store_token(SharedToken("tok-1", T0 + 86400, T0 + 86100))
    assert b.claim_login(None, 40) == SharedToken("tok-1", T0 + 86400, T0 + 86100)
    # the server refused tok-1: it is dropped once, and the next claim may log in
    b.drop_token("tok-1")
    assert a.shared_token() is None
    assert b.claim_login("tok-1", 40) is True
    b.store_token(SharedToken("tok-2", T0 + 86400, T0 + 86100))
    a.drop_token("tok-1")  # late news about the old token does not drop the new one
    assert a.shared_token() == SharedToken("tok-2", T0 + 86400, T0 + 86100)
    # due for renewal: one process logs in again
    fake.now = T0 + 86100
    assert a.claim_login(None, 40) is True
    assert b.claim_login(None, 40) is False
    # a died while logging in: its lease runs out and b takes over
    fake.advance(41)
    assert b.claim_login(None, 40) is True


def test_a_429_while_the_circuit_is_open_still_blocks(engine, fake):
    lim = limiter(engine, fake)
    for _ in range(FAILURES_TO_OPEN):
        lim.failed()
    lim.failed(600, throttled=True)
    assert lim.state().blocked_until == pytest.approx(fake.now + 600)


def test_a_deadline_before_the_next_slot_raises_without_taking_it(engine, fake):
    rate = 2.0
    interval = SPACING_MARGIN / rate
    lim, other = limiter(engine, fake, rate), limiter(engine, fake, rate)
    lim.acquire()  # slot at T0; the next one is T0 + interval

    def next_slot() -> float:
        with engine.connect() as conn:
            return conn.execute(select(Gate.next_slot_at).where(Gate.key == "gate")).scalar_one()

    assert next_slot() == pytest.approx(T0 + interval)
    for _ in range(3):
        with pytest.raises(DeadlineExceeded) as caught:
            lim.acquire(deadline=T0 + interval / 2)
        assert isinstance(caught.value, TransientError)
        assert caught.value.reason == "inline_timeout"
    assert fake.waits == []
    assert next_slot() == pytest.approx(T0 + interval)  # nothing was taken

    # the next caller gets the very slot the refused ones did not take
    assert take(other, fake) == pytest.approx(T0 + interval)
    assert fake.waits == pytest.approx([interval])
    # a deadline at or after the slot is fine
    assert take(lim, fake, deadline=T0 + 2 * interval + 0.001) == pytest.approx(T0 + 2 * interval)


def test_a_deadline_before_a_429_block_raises_too(engine, fake):
    lim = limiter(engine, fake)
    lim.failed(10, throttled=True)
    with pytest.raises(DeadlineExceeded):
        lim.acquire(deadline=T0 + 5)
    assert fake.waits == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rate=st.sampled_from([1.0, 2.5, 5.0, 10.0, 20.0]),
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.floats(0, 0.6, allow_nan=False)), min_size=2, max_size=25
    ),
)
def test_no_window_ever_holds_more_than_the_rate(engine, rate, steps):
    """Three limiters, callers arriving at arbitrary times: no 1 s window holds more calls
    than the rate allows, and no two calls are closer than the spacing (a caller that
    would wait longer than MAX_SLEEP_S is refused and takes no slot)."""
    key = f"prop-{uuid.uuid4().hex}"  # a fresh row per example
    fake = FakeTime()
    limiters = [limiter(engine, fake, rate, key) for _ in range(3)]
    departures = []
    for who, pause in steps:
        fake.advance(pause)
        asked = fake.now
        try:
            limiters[who].acquire()
        except TransientError as exc:  # the queue is over MAX_SLEEP_S long: come back later
            assert exc.reason == "rate_limited" and exc.retry_after > MAX_SLEEP_S
            continue
        departures.append(fake.now)
        fake.now = asked  # callers are independent: one's sleep is not another's
    ordered = sorted(departures)
    if len(ordered) < 2:
        return
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    assert min(gaps) >= SPACING_MARGIN / rate - EPS
    assert max_in_window(departures) <= math.ceil(rate)
