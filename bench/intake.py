"""Intake benchmark: throughput and latency of signed WHMCS events, stored and acknowledged
(inline apply off, no worker), per kind of event (bench.load.KINDS: with a password, without,
and a billing system's ordinary mix), each against bench.reference measured in the same run
under the same gunicorn settings, on SQLite and on PostgreSQL; intake while a staff client
polls /api/events in a loop; and the peak RSS of a gunicorn worker.

    PYTHONPATH=. .venv/bin/python -m bench.intake [--requests 2000] [--legs sqlite,postgresql]

Each leg (database backend) starts a fresh Stack (simulator, database, config) and the
bridge's gunicorn (2 workers x 8 threads, gthread, access log on: gunicorn.conf.py). For each
kind it sends an untimed warm-up, then the timed requests, each batch signed just before,
to the bridge and then to bench.reference (Flask: HMAC, C SHA512-crypt of a password, one
INSERT into the same backend), served beside it with the same settings: one idles while the
other is driven, and alternating kind by kind lets both see the same background load.
Then the mix again while another process re-reads GET /api/events?source=whmcs (the page
with the per-status counts) as fast as the bridge answers it; then again with that poller on
a staff server of its own (`wsgi:staff`, 1 worker x 4 threads, Nice=10, as deploy/ runs it);
and the mix alone once more. The ratios to the mix alone (before and after) say whether reads
hold intake up (SQLite has one write lock) or only share the CPU, and every hook answer is
counted, 503s included. Every acknowledged event is
checked in both ledgers.

PostgreSQL: BENCH_DATABASE_URL names the database to use (its public schema is emptied
first); without it, database `bench_intake` on BENCH_POSTGRES (default the local server).

Accuracy: the generator shares the machine's CPUs with the server under test and costs
0.15 to 0.3 ms of CPU per request. The reference needs well under 1 ms per request, the bridge
more: the generator slows the reference down proportionally more, so the throughput ratio
flatters the bridge somewhat. The `cpu_ms` details (the gunicorn workers' own CPU time per
request) carry no such bias. Anything else running on the machine shows in the figures: the
load average is printed with each leg.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import create_engine, text

from bench.harness import (
    BIN,
    ROOT,
    Proc,
    Stack,
    children,
    free_port,
    listening,
    postgres_url,
    report,
    wait_until,
)
from bench.load import KINDS, LoadResult, Prepared, kind_requests, run_load

# gunicorn.conf.py's defaults; both servers run with them so that only the application differs.
WORKERS, THREADS = 2, 8
VERSUS = "bench.reference"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The issue's targets (throughput ratio to the reference of the same kind).
TARGETS = {"password": 0.8, "plain": 0.7, "mix": 0.7}
POLL_TARGET = 0.8  # intake while polled / intake alone
POLLED_PAGE = "/api/events?source=whmcs"
STAFF = "bench-viewer@example.org"
#: Service numbers per kind, apart, so that one kind's events never land on another's.
FIRST_SERVICE = {
    "password": 100_000,
    "plain": 200_000,
    "mix": 300_000,
    "polled": 400_000,
    "polled_split": 500_000,
}
FORK = multiprocessing.get_context("fork")


class BenchFailed(Exception):
    """A leg that produced no trustworthy figure (an error answer, a lost event)."""


@dataclass(frozen=True)
class Measured:
    """One server under one timed batch."""

    load: LoadResult
    cpu_ms_per_request: float  # the workers' CPU time (user + system) per timed request


@dataclass(frozen=True)
class Polled:
    """The bridge's intake while a staff client re-read the events page."""

    intake: Measured
    polls: int
    poll_errors: int
    poll_p50_ms: float


@dataclass
class Leg:
    """The bridge and the reference on one database backend."""

    name: str
    bridge: dict[str, Measured] = field(default_factory=dict)
    reference: dict[str, Measured] = field(default_factory=dict)
    polled: Polled | None = None
    #: The same, with the poller on a staff server of its own (deploy/: wsgi:staff, Nice=10).
    polled_split: Polled | None = None
    mix_after: Measured | None = None
    bridge_rss_mb: float = 0.0
    #: Before any console or API request: what a server taking only webhooks holds.
    hooks_rss_mb: float = 0.0
    reference_rss_mb: float = 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description="Intake throughput, p50/p99 latency and CPU per request of the bridge "
        "(store + acknowledge, inline apply off) per kind of event, against a minimal "
        "reference endpoint (bench.reference) measured in the same run; intake while the "
        "events page is polled; the web worker's peak RSS.",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="timed requests per kind and server (%(default)s); signed just before each "
        "batch, which must end within the 300 s signature tolerance",
    )
    parser.add_argument("--warmup", type=int, default=150, help="untimed, per kind (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight (%(default)s)")
    parser.add_argument(
        "--processes", type=int, default=2, help="load generator processes (%(default)s)"
    )
    parser.add_argument("--legs", default="sqlite,postgresql", help="backends (%(default)s)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="kinds of event, of bench.load.KINDS (%(default)s)"
    )
    parser.add_argument(
        "--no-poll", action="store_true", help="skip intake while /api/events is polled"
    )
    parser.add_argument("--keep", action="store_true", help="keep each leg's folder (logs, DBs)")
    args = parser.parse_args(argv)
    if unknown := set(args.legs.split(",")) - {"sqlite", "postgresql"}:
        parser.error(f"unknown leg(s): {', '.join(sorted(unknown))}")
    if unknown := set(args.kinds.split(",")) - set(KINDS):
        parser.error(f"unknown kind(s): {', '.join(sorted(unknown))}; of {', '.join(KINDS)}")
    if not args.no_poll and "mix" not in args.kinds.split(","):
        parser.error("the polled run is compared with the mix: add mix to --kinds or --no-poll")
    if min(args.requests, args.warmup, args.concurrency, args.processes) < 1:
        parser.error("--requests, --warmup, --concurrency and --processes must be positive")
    return args


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def workers_cpu_s(master: Proc) -> float:
    """CPU seconds (user + system) used so far by a gunicorn master's workers."""
    ticks = 0
    for pid in children(master.pid):
        try:
            # Fields after the parenthesised command name; utime and stime are 14th and 15th.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def load_checked(
    name: str, url: str, batch: list[Prepared], args: argparse.Namespace
) -> LoadResult:
    """Send a batch; any answer that is not 2xx fails the leg."""
    result = run_load(url, batch, concurrency=args.concurrency, processes=args.processes)
    if result.errors:
        raise BenchFailed(
            f"{name}: {result.errors} of {len(batch)} answers were not 2xx; first: "
            f"{result.first_error}"
        )
    return result


def timed(
    name: str, server: Proc, url: str, batch: list[Prepared], args: argparse.Namespace
) -> Measured:
    """One timed batch, with the workers' CPU time; the RSS high-water mark sampled after."""
    cpu_before = workers_cpu_s(server)
    result = run_load(url, batch, concurrency=args.concurrency, processes=args.processes)
    cpu_ms = (workers_cpu_s(server) - cpu_before) * 1000
    server.sample_rss()  # VmHWM: one reading while the workers live covers the whole batch
    progress(
        f"{name}: {result.throughput:.0f} req/s, p50 {result.percentile_ms(50):.1f} ms, "
        f"p99 {result.percentile_ms(99):.1f} ms, {result.elapsed_s:.1f} s, "
        f"{cpu_ms / len(batch):.2f} ms CPU/req, {result.errors} not 2xx"
    )
    return Measured(result, cpu_ms / len(batch))


def drive(
    name: str, server: Proc, url: str, kind: str, args: argparse.Namespace, sent: list[str]
) -> Measured:
    """Warm a server up on this kind (connections, statement caches), then time it."""
    first = FIRST_SERVICE[kind]
    warmup = kind_requests(kind, args.warmup, first_service=first + 50_000)
    load_checked(name, url, warmup, args)
    batch = kind_requests(kind, args.requests, first_service=first)
    measured = timed(name, server, url, batch, args)
    if measured.load.errors:
        raise BenchFailed(
            f"{name}: {measured.load.errors} of {len(batch)} answers were not 2xx; first: "
            f"{measured.load.first_error}"
        )
    sent += [p.webhook_id for p in warmup + batch]
    return measured


# --- the staff client polling the events page ---------------------------------------------


def _poll(url: str, token: str, ready: Any, stop: Any, out: Any) -> None:
    """Re-read the events page until `stop` is set; (answers, errors, latencies) to `out`."""
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("GET", POLLED_PAGE, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        latencies.append(time.perf_counter() - started)
        errors += status != 200
        ready.set()
    conn.close()
    out.put((len(latencies), errors, statistics.median(latencies) * 1000 if latencies else 0.0))


def polled(
    name: str,
    server: Proc,
    url: str,
    token: str,
    args: argparse.Namespace,
    sent: list[str],
    *,
    poll_url: str | None = None,
    first_service: int = FIRST_SERVICE["polled"],
) -> Polled:
    """The mix again, while a staff client polls the events page in a loop (on `url`, or on
    another server of the same ledger: `poll_url`)."""
    ready, stop, out = FORK.Event(), FORK.Event(), FORK.Queue()
    poller = FORK.Process(
        target=_poll, args=(poll_url or url, token, ready, stop, out), daemon=True
    )
    poller.start()
    try:
        if not ready.wait(60):
            raise BenchFailed(f"{name}: the events page did not answer within 60 s")
        batch = kind_requests("mix", args.requests, first_service=first_service)
        measured = timed(name, server, f"{url}/hooks/whmcs", batch, args)
    finally:
        stop.set()
    polls, errors, p50 = out.get(timeout=180)
    poller.join(timeout=30)
    sent += [p.webhook_id for p in batch]
    progress(f"{name}: {polls} reads of {POLLED_PAGE}, median {p50:.0f} ms, {errors} not 200")
    return Polled(measured, polls, errors, p50)


def staff_token(stack: Stack) -> str:
    """A viewer's API token, made with the bridge's own commands."""
    bridge = [str(BIN / "bridge"), "--config", str(stack.config_path), "staff"]
    common = {"cwd": ROOT, "env": stack.env(), "capture_output": True, "text": True}
    subprocess.run(
        [*bridge, "add", STAFF, "--password-stdin"],
        input="Bench-Viewer-Passw0rd-1\n",
        check=True,
        **common,  # type: ignore[call-overload]
    )
    done = subprocess.run([*bridge, "token", STAFF], check=True, **common)  # type: ignore[call-overload]
    return str(done.stdout.strip().splitlines()[-1])


# --- checks -------------------------------------------------------------------------------


def check_stored(name: str, stored: list[str], sent: list[str], acknowledged: int) -> None:
    """Every acknowledged delivery is one stored row, and nothing else is."""
    rows = set(stored)
    if len(stored) != len(rows) or not rows <= set(sent) or len(rows) != acknowledged:
        raise BenchFailed(
            f"{name}: {acknowledged} deliveries acknowledged, {len(rows & set(sent))} of them "
            f"stored ({len(stored)} rows)"
        )


def webhook_ids(database: str, table: str) -> list[str]:
    if database.startswith("postgresql"):
        engine = create_engine(database)
        try:
            with engine.connect() as conn:
                return list(conn.scalars(text(f"SELECT webhook_id FROM {table}")))
        finally:
            engine.dispose()
    conn = sqlite3.connect(database.removeprefix("sqlite:///"))
    try:
        return [row[0] for row in conn.execute(f"SELECT webhook_id FROM {table}")]
    finally:
        conn.close()


def start_reference(stack: Stack, database: str) -> tuple[Proc, str]:
    """bench.reference under gunicorn, as the bridge runs; its master and base URL."""
    port = free_port()
    proc = stack.spawn(
        "reference",
        [
            sys.executable,
            "-m",
            "bench.reference",
            "--bind",
            f"127.0.0.1:{port}",
            "--database",
            database,
            "--workers",
            str(WORKERS),
            "--threads",
            str(THREADS),
        ],
    )
    wait_until(lambda: listening(port), 30, "the reference endpoint to listen")
    return proc, f"http://127.0.0.1:{port}"


def acknowledged(measures: list[Measured], warmups: int) -> int:
    return warmups + sum(len(m.load.answers) - m.load.errors for m in measures)


def run_leg(name: str, database_url: str | None, args: argparse.Namespace) -> Leg:
    """The bridge and the reference side by side, kind after kind, one driven while the
    other idles, so that a change in the machine's other load weighs on both alike."""
    kinds = args.kinds.split(",")
    leg = Leg(name)
    with Stack(database_url=database_url, inline_timeout_s=0, keep=args.keep) as stack:
        if args.keep:
            progress(f"{name}: logs and databases in {stack.dir}")
        token = "" if args.no_poll else staff_token(stack)
        web = stack.start_web(workers=WORKERS, threads=THREADS)
        web_url = web.url  # type: ignore[attr-defined]
        ref_db = stack.database_url if database_url else f"sqlite:///{stack.dir / 'ref.db'}"
        ref, ref_url = start_reference(stack, ref_db.removeprefix("sqlite:///"))
        sent: list[str] = []
        ref_sent: list[str] = []
        for kind in kinds:
            leg.bridge[kind] = drive(
                f"{name} bridge {kind}", web, f"{web_url}/hooks/whmcs", kind, args, sent
            )
            leg.reference[kind] = drive(
                f"{name} reference {kind}", ref, f"{ref_url}/hooks/whmcs", kind, args, ref_sent
            )
        web.sample_rss()
        leg.hooks_rss_mb = web.child_peak_mb()
        if not args.no_poll:
            leg.polled = polled(f"{name} bridge mix, polled", web, web_url, token, args, sent)
            staff = stack.start_staff()
            leg.polled_split = polled(
                f"{name} bridge mix, polled on a staff server",
                web,
                web_url,
                token,
                args,
                sent,
                poll_url=staff.url,  # type: ignore[attr-defined]
                first_service=FIRST_SERVICE["polled_split"],
            )
            staff.stop()
            # The mix alone once more: the polled runs are compared with both around them.
            leg.mix_after = drive(
                f"{name} bridge mix, again", web, f"{web_url}/hooks/whmcs", "mix", args, sent
            )
        leg.bridge_rss_mb = web.child_peak_mb()
        leg.reference_rss_mb = ref.child_peak_mb()
        web.stop()
        ref.stop()
        measures = list(leg.bridge.values())
        measures += [p.intake for p in (leg.polled, leg.polled_split) if p is not None]
        measures += [leg.mix_after] if leg.mix_after else []
        check_stored(
            f"{name} bridge",
            webhook_ids(stack.database_url, "events"),
            sent,
            acknowledged(measures, args.warmup * (len(kinds) + (0 if args.no_poll else 1))),
        )
        check_stored(
            f"{name} reference",
            webhook_ids(ref_db, "reference_events"),
            ref_sent,
            acknowledged(list(leg.reference.values()), args.warmup * len(kinds)),
        )
    return leg


# --- results ------------------------------------------------------------------------------


def report_leg(leg: Leg, args: argparse.Namespace) -> None:
    """Per kind: throughput and p99 of the bridge, each with its ratio to the reference's
    of the same kind; then the polled run against the mix alone."""
    common = {"requests": args.requests, "concurrency": args.concurrency}
    for kind, bridge in leg.bridge.items():
        ref = leg.reference[kind]
        b, r = bridge.load, ref.load
        report(
            f"intake.{leg.name}.{kind}.throughput",
            b.throughput,
            "req/s",
            ratio=b.throughput / r.throughput,
            versus=f"{VERSUS} (target >= {TARGETS[kind]})",
            reference=round(r.throughput, 1),
            cpu_ms=round(bridge.cpu_ms_per_request, 2),
            ref_cpu_ms=round(ref.cpu_ms_per_request, 2),
            **common,
        )
        report(
            f"intake.{leg.name}.{kind}.p99_ms",
            b.percentile_ms(99),
            "ms",
            ratio=b.percentile_ms(99) / r.percentile_ms(99),
            versus=VERSUS,
            reference=round(r.percentile_ms(99), 1),
            p50=round(b.percentile_ms(50), 1),
            ref_p50=round(r.percentile_ms(50), 1),
        )
    if leg.mix_after is None:
        return
    alone = (leg.bridge["mix"].load.throughput + leg.mix_after.load.throughput) / 2
    for label, run, where in (
        ("polled", leg.polled, "the same server"),
        ("polled_split", leg.polled_split, "a staff server, Nice=10"),
    ):
        if run is None:
            continue
        polled_ = run.intake.load
        statuses = [a.status for a in polled_.answers]
        report(
            f"intake.{leg.name}.{label}.throughput",
            polled_.throughput,
            "req/s",
            ratio=polled_.throughput / alone,
            versus=f"the mix without polling, before and after (target >= {POLL_TARGET})",
            poller_on=where,
            alone=round(alone, 1),
            cpu_ms=round(run.intake.cpu_ms_per_request, 2),
            alone_cpu_ms=round(leg.bridge["mix"].cpu_ms_per_request, 2),
            p99_ms=round(polled_.percentile_ms(99), 1),
            polls=run.polls,
            poll_p50_ms=round(run.poll_p50_ms, 1),
            poll_errors=run.poll_errors,
        )
        report(
            f"intake.{leg.name}.{label}.503s",
            statuses.count(503),
            "answers",
            ratio=None,
            versus=f"{len(statuses)} hooks while polled (target 0)",
            other_errors=sum(1 for s in statuses if not 200 <= s < 300 and s != 503),
        )


def report_rss(legs: list[Leg]) -> None:
    """One figure for all legs: the largest worker peak seen, against the reference's."""
    peak = max(leg.bridge_rss_mb for leg in legs)
    ref_peak = max(leg.reference_rss_mb for leg in legs)
    per_leg = {leg.name: round(leg.bridge_rss_mb, 1) for leg in legs}
    # The console and the API are loaded on their first request (bridge/app.py).
    per_leg |= {f"{leg.name}_hooks_only": round(leg.hooks_rss_mb, 1) for leg in legs}
    report(
        "web.peak_rss_mb",
        peak,
        "MB",
        ratio=peak / ref_peak,
        versus=f"{VERSUS} (target <= 80 MB)",
        reference=round(ref_peak, 1),
        **per_leg,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    legs: list[Leg] = []
    try:
        for name in args.legs.split(","):
            if name == "sqlite":
                url = None  # the Stack makes a fresh SQLite file
            elif (url := postgres_url("bench_intake")) is None:
                continue  # postgres_url printed the skip line
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            progress(
                f"{name} leg: {args.warmup} + {args.requests} requests per kind and server "
                f"({args.kinds}); load average {load}"
            )
            legs.append(run_leg(name, url, args))
            report_leg(legs[-1], args)
    except BenchFailed as exc:
        print(f"intake FAILED: {exc}", flush=True)
        return 1
    if legs:
        report_rss(legs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
