"""Prometheus counters kept by each process (the ledger's gauges: bridge/support/health.py).

Under gunicorn every worker process writes its counters to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py) and `/metrics` adds them up, so a scrape sees the whole app server, not the
one worker that answered (https://prometheus.github.io/client_python/multiprocess/).
`bridge worker` is its own process: `bridge worker --metrics-port N` serves its counters.
What lives in the database (events by status, queue depth and age, the circuit) is read at
scrape time, so it is right however many processes and hosts share the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)

HOOK_SECONDS = Histogram(
    "bridge_intake_seconds",
    "Time to verify, store and answer one webhook delivery (inline apply included).",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
HOOK_ANSWERS = Counter(
    "bridge_hook_answers",
    "Webhook deliveries answered, by HTTP status code.",
    ["source", "code"],
)
MAILSERVER_CALLS = Counter(
    "bridge_mailserver_calls",
    "Calls made to the mail server, by route and HTTP status (or the network error).",
    ["method", "route", "status"],
)
MAILSERVER_SECONDS = Histogram(
    "bridge_mailserver_call_seconds",
    "Duration of mail-server calls.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
LOGINS = Counter("bridge_mailserver_logins", "Logins to the mail server (one per token).")
LIMITER_WAIT = Histogram(
    "bridge_ratelimit_wait_seconds",
    "How long a call waited for its slot under mailserver.rate_limit_per_s.",
    buckets=(0, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILES = Counter(
    "bridge_reconciles",
    "Reconciles of one service, by outcome (applied, retry, failed).",
    ["outcome"],
)
RETRIES = Counter(
    "bridge_retries_scheduled",
    "Reconciles put off for a later retry after a transient failure, by reason.",
    ["reason"],
)


class _ThisProcess(Collector):
    """This process's own counters, when not in multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(ledger: Collector) -> tuple[bytes, str]:
    """The text for one scrape: every process's counters plus the ledger's gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client ships these two functions without annotations.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(ledger)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a finished gunicorn worker's live gauges (gunicorn.conf.py child_exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # see above
