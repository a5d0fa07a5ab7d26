"""`bridge worker`: reconcile due services until told to stop (SIGTERM/SIGINT finish the
current service first, so its lease is released, not left to expire). Between reconciles it
refreshes the usage figures when they are due (bridge/provisioning/usage.py)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from bridge.provisioning.jobs import run_once, worker_id
from bridge.provisioning.usage import refresh_if_due
from bridge.runtime import Runtime

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0
#: How often a worker asks the database whether the usage refresh is due.
USAGE_CHECK_S = 60.0


def run_forever(rt: Runtime, stop: threading.Event | None = None) -> int:
    """Loop until `stop` is set; return how many reconciles ran."""
    stop = stop or threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: %s received, finishing the current service", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    owner = worker_id()
    log.info("worker %s started", owner)
    done = 0
    next_usage_check = 0.0
    while not stop.is_set():
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
