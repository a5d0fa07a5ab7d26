"""A light load generator for loopback: signed WHMCS deliveries of one kind (KINDS), built
and signed before the clock starts, sent at a fixed concurrency from a few processes with a
few threads each, every thread on its own keep-alive connection (http.client: the cheapest
client in the stdlib).

Accuracy: the generator shares the machine's CPUs with the server it measures (2 cores on the
project's bench machine) and costs 0.15 to 0.3 ms of CPU per request, taken from the server.
A fast server loses proportionally more to it than a slow one: see bench.intake.
"""

from __future__ import annotations

import http.client
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

from bench.harness import signed
from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action

# fork, whatever the platform default: the children inherit the pre-built requests for free.
FORK = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class Prepared:
    """One delivery, ready to send."""

    webhook_id: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    """What one request got: its HTTP status (0: no answer) and how long it took."""

    status: int
    latency_s: float


@dataclass(frozen=True)
class ThreadRun:
    """One sending thread's answers and the window it was busy in (time.monotonic)."""

    answers: list[Answer]
    started: float
    finished: float
    first_error: str | None


@dataclass(frozen=True)
class LoadResult:
    """The answers to one batch of requests and the window they were sent in."""

    answers: list[Answer]
    elapsed_s: float
    first_error: str | None

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return len(self.answers) / self.elapsed_s

    def percentile_ms(self, pct: int) -> float:
        """The `pct`th percentile of the latencies, in milliseconds."""
        cuts = statistics.quantiles([a.latency_s for a in self.answers], n=100, method="inclusive")
        return cuts[pct - 1] * 1000

    @property
    def errors(self) -> int:
        """Requests without a 2xx answer."""
        return sum(1 for a in self.answers if not 200 <= a.status < 300)


#: A billing system's ordinary day, per 20 events: mostly suspends and unsuspends (overdue
#: invoices and their payments), renewals, some package changes, few new orders, password
#: changes and terminations. 3 of 20 (15%) carry a password.
DAY: tuple[tuple[Action, dict[str, Any]], ...] = (
    *[(Action.SUSPEND, {})] * 6,
    *[(Action.UNSUSPEND, {})] * 5,
    *[(Action.RENEW, {})] * 3,
    (Action.CHANGE_PACKAGE, {"product": 2}),
    (Action.CHANGE_PACKAGE, {"addons": {"extra_mailboxes": 2}}),
    *[(Action.CREATE, {})] * 2,
    (Action.CHANGE_PASSWORD, {}),
    (Action.TERMINATE, {}),
)
#: What `kind_requests()` can build, and what each is.
KINDS = {
    "password": "creates of new services: every request carries a password to hash",
    "plain": "suspends and unsuspends of services: no password",
    "mix": "a billing system's day: suspends, unsuspends, renewals, package changes, "
    "creates, password changes, terminations (15% carry a password)",
}


def kind_requests(kind: str, count: int, first_service: int) -> list[Prepared]:
    """`count` signed WHMCS deliveries of one of KINDS, each with its own webhook-id, for
    services numbered from `first_service`."""
    prepared = []
    pool = max(50, count // 4)  # the services a day's events are about
    for i in range(count):
        if kind == "password":
            payload = whmcs_envelope(Action.CREATE, first_service + i)
        elif kind == "plain":
            action = Action.SUSPEND if i % 2 == 0 else Action.UNSUSPEND
            payload = whmcs_envelope(action, first_service + i // 2)
        elif kind == "mix":
            action, options = DAY[i % len(DAY)]
            payload = whmcs_envelope(action, first_service + (i * 7) % pool, **options)
        else:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        prepared.append(_signed(payload))
    return prepared


def _signed(payload: dict[str, Any]) -> Prepared:
    body, headers = signed("whmcs", payload)
    return Prepared(headers["webhook-id"], body, headers)


def run_load(
    url: str, prepared: list[Prepared], *, concurrency: int = 8, processes: int = 2
) -> LoadResult:
    """POST every prepared request to `url`, `concurrency` in flight, spread over `processes`
    processes (threads share one GIL: more than one process keeps the generator from being
    the bottleneck; more than two would only take CPU from the server on this machine)."""
    processes = min(processes, concurrency)
    counter = FORK.Value("q", 0)
    barrier = FORK.Barrier(concurrency)
    results: Queue[list[ThreadRun]] = FORK.Queue()
    workers = [
        FORK.Process(
            target=_sender_process,
            args=(url, prepared, counter, barrier, results, _share(concurrency, processes, p)),
            daemon=True,
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    runs = [run for _ in workers for run in results.get(timeout=600)]
    for worker in workers:
        worker.join()
    answers = [a for run in runs for a in run.answers]
    if len(answers) != len(prepared):
        raise RuntimeError(
            f"the generator lost {len(prepared) - len(answers)} requests (traceback above)"
        )
    return LoadResult(
        answers=answers,
        elapsed_s=max(r.finished for r in runs) - min(r.started for r in runs),
        first_error=next((r.first_error for r in runs if r.first_error), None),
    )


def _share(total: int, parts: int, part: int) -> int:
    """How many of `total` threads process number `part` of `parts` runs."""
    return total // parts + (1 if part < total % parts else 0)


def _sender_process(
    url: str,
    prepared: list[Prepared],
    counter: Synchronized[int],
    barrier: Barrier,
    results: Queue[list[ThreadRun]],
    threads: int,
) -> None:
    """One generator process: `threads` senders claiming requests from the shared counter."""

    def claim() -> int:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        return index

    runs: list[ThreadRun] = []
    senders = [
        threading.Thread(target=lambda: runs.append(_send(url, prepared, claim, barrier)))
        for _ in range(threads)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    results.put(runs)


def _send(
    url: str, prepared: list[Prepared], claim: Callable[[], int], barrier: Barrier
) -> ThreadRun:
    """Send claimed requests one after the other on one keep-alive connection."""
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
    try:
        conn.connect()  # before the clock starts; a failure shows on the first request
    except OSError:
        conn.close()
    barrier.wait(timeout=60)
    answers: list[Answer] = []
    first_error: str | None = None
    started = time.monotonic()
    while (index := claim()) < len(prepared):
        request = prepared[index]
        sent = time.perf_counter()
        try:
            conn.request("POST", target.path, request.body, request.headers)
            response = conn.getresponse()
            status, text = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # http.client opens a new connection for the next request
            status, text = 0, repr(exc).encode()
        answers.append(Answer(status, time.perf_counter() - sent))
        if first_error is None and not 200 <= status < 300:
            first_error = f"HTTP {status}: {text[:300].decode(errors='replace')}"
    finished = time.monotonic()
    conn.close()
    return ThreadRun(answers, started, finished, first_error)
