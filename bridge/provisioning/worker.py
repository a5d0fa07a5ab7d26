"""`bridge worker`: reconcile due services until told to stop (SIGTERM/SIGINT finish the
current service first, so its lease is released, not left to expire). Between reconciles it
refreshes the usage figures when they are due (bridge/provisioning/usage.py).

While the mail server's gate is closed (a ban, a Retry-After, the circuit's pause) the worker
claims nothing and sleeps on its stop event, so a signal ends it at once; when the circuit's
pause is over it sends one light probe, and reconciles again as soon as the server answers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from bridge.mailserver import PermanentError, TransientError
from bridge.mailserver.ratelimit import when
from bridge.provisioning.jobs import run_once, worker_id
from bridge.provisioning.usage import refresh_if_due
from bridge.runtime import Runtime

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0
#: How often a worker asks the database whether the usage refresh is due.
USAGE_CHECK_S = 60.0
#: Look at the gate again at least this often while it is closed.
GATE_POLL_S = 30.0


def run_forever(
    rt: Runtime,
    stop: threading.Event | None = None,
    reload: Callable[[Runtime], Runtime] | None = None,
) -> int:
    """Loop until `stop` is set; return how many reconciles ran.

    With `reload`, SIGHUP asks for it between two services: it returns the runtime to go on
    with (the same one when the new config is refused).
    """
    stop = stop or threading.Event()
    hup = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: %s received, finishing the current service", signal.Signals(signum).name)
        stop.set()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        hup.set()  # taken up before the next service (within IDLE_POLL_S when idle)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        if reload is not None:
            signal.signal(signal.SIGHUP, request_reload)
    owner = worker_id()
    log.info("worker %s started", owner)
    done = 0
    next_usage_check = 0.0
    paused = False
    while not stop.is_set():
        if hup.is_set() and reload is not None:
            hup.clear()
            rt = reload(rt)
        pause = gate_pause(rt)
        if pause > 0:
            if not paused:
                log.info("worker: mail-server calls paused until %s", when(time.time() + pause))
                paused = True
            stop.wait(min(pause, GATE_POLL_S))
            continue
        paused = False
        if time.monotonic() >= next_usage_check:
            next_usage_check = time.monotonic() + USAGE_CHECK_S
            try:
                refresh_if_due(rt)
            except Exception:  # noqa: BLE001 - usage figures must never stop provisioning
                log.exception("usage refresh failed")
        outcome = run_once(rt, owner=owner)
        if outcome is None:
            stop.wait(IDLE_POLL_S)
        else:
            done += 1
    log.info("worker %s stopped after %d reconciles", owner, done)
    return done


def gate_pause(rt: Runtime) -> float:
    """Seconds before the mail server may be called (0: go ahead). After the circuit's
    pause, one light probe decides: the server answers, or another short pause."""
    limiter = rt.mailserver.limiter
    if limiter is None:
        return 0.0
    state = limiter.state()
    now = limiter.clock()
    pause = state.pause_s(now)
    if pause > 0 or not state.half_open(now):
        return pause
    try:
        rt.mailserver.client().probe()
    except TransientError as exc:
        return max(exc.retry_after or 0.0, IDLE_POLL_S)
    except PermanentError:
        pass  # the server answered (the reconcile will report what it said)
    log.info("worker: the mail server answers again")
    return 0.0
