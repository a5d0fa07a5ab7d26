"""`bridge worker`: reconcile due services until told to stop (SIGTERM/SIGINT finish the
current service first, so its lease is released, not left to expire)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from bridge.provisioning.jobs import run_once, worker_id
from bridge.runtime import Runtime

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0


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
    while not stop.is_set():
        if hup.is_set() and reload is not None:
            hup.clear()
            rt = reload(rt)
        outcome = run_once(rt, owner=owner)
        if outcome is None:
            stop.wait(IDLE_POLL_S)
        else:
            done += 1
    log.info("worker %s stopped after %d reconciles", owner, done)
    return done
