"""Intake benchmark: throughput and p50/p99 latency of signed WHMCS events, stored and
acknowledged (inline apply off, no worker), against bench.reference measured in the same run,
on SQLite and on PostgreSQL; and the peak RSS of a gunicorn worker during the runs.

    PYTHONPATH=. .venv/bin/python -m bench.intake [--requests 3000] [--legs sqlite,postgresql]

Each leg starts a fresh Stack (simulator, database, config) and the bridge's gunicorn, warms
it up, sends the timed requests, checks that every acknowledged event is in the ledger and
stops it; then it serves bench.reference with the same gunicorn settings and does the same.
Both get the same mix of requests from the same generator (bench.load).

Accuracy: the generator shares the machine's 2 CPUs with the server under test and costs
0.15 to 0.3 ms of CPU per request. The reference needs under 0.5 ms per request, the bridge
several: the generator slows the reference down proportionally more, so the throughput ratio
flatters the bridge somewhat. The `cpu_ms_per_req` details (the gunicorn workers' own CPU
time per request) carry no such bias. Anything else running on the machine shows in the
figures: the load average is printed with each leg.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.harness import (
    Proc,
    Stack,
    children,
    free_port,
    listening,
    postgres_url,
    report,
    wait_until,
)
from bench.load import LoadResult, Prepared, run_load, whmcs_requests

# gunicorn.conf.py's defaults; both servers run with them so that only the application differs.
WORKERS, THREADS = 2, 8
VERSUS = "bench.reference"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailed(Exception):
    """A leg that produced no trustworthy figure (an error answer, a lost event)."""


@dataclass(frozen=True)
class Measured:
    """One server under the timed load."""

    load: LoadResult
    peak_rss_mb: float  # the largest gunicorn worker's VmHWM
    cpu_ms_per_request: float  # the workers' CPU time (user + system) per timed request


@dataclass(frozen=True)
class Leg:
    """The bridge and the reference on one database backend."""

    name: str
    bridge: Measured
    reference: Measured


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description="Intake throughput, p50/p99 latency and worker peak RSS of the bridge "
        "(store + acknowledge, inline apply off) against a minimal reference endpoint "
        "(bench.reference) measured in the same run.",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=3000,
        help="timed requests per server (%(default)s); they are signed up front, so one "
        "server's run must end within the 300 s signature tolerance",
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed first (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight (%(default)s)")
    parser.add_argument(
        "--processes", type=int, default=2, help="load generator processes (%(default)s)"
    )
    parser.add_argument("--legs", default="sqlite,postgresql", help="backends (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep each leg's folder (logs, DBs)")
    args = parser.parse_args(argv)
    if unknown := set(args.legs.split(",")) - {"sqlite", "postgresql"}:
        parser.error(f"unknown leg(s): {', '.join(sorted(unknown))}")
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


def drive(
    name: str, server: Proc, url: str, sent: list[Prepared], args: argparse.Namespace
) -> Measured:
    """Warm a server up (connections, lazy imports, caches), then time the rest."""
    load_checked(name, url, sent[: args.warmup], args)
    cpu_before = workers_cpu_s(server)
    result = load_checked(name, url, sent[args.warmup :], args)
    cpu_ms = (workers_cpu_s(server) - cpu_before) * 1000
    # VmHWM is the kernel's own high-water mark: one reading while the workers still live
    # covers the whole run.
    server.sample_rss()
    progress(
        f"{name}: {result.throughput:.0f} req/s, p50 {result.percentile_ms(50):.1f} ms, "
        f"p99 {result.percentile_ms(99):.1f} ms, {result.elapsed_s:.1f} s"
    )
    return Measured(result, server.child_peak_mb(), cpu_ms / args.requests)


def fresh_requests(args: argparse.Namespace) -> list[Prepared]:
    """Warm-up then timed requests, signed now (each server gets its own, all fresh)."""
    return whmcs_requests(args.warmup + args.requests, first_service=1000)


def check_stored(name: str, stored: list[str], sent: list[Prepared]) -> None:
    """Every acknowledged delivery (all of them: an error fails earlier) is one stored row."""
    expected = {p.webhook_id for p in sent}
    if len(stored) != len(expected) or set(stored) != expected:
        raise BenchFailed(
            f"{name}: {len(expected)} deliveries acknowledged, {len(stored)} rows stored, "
            f"{len(expected - set(stored))} acknowledged deliveries missing"
        )


def bridge_webhook_ids(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT webhook_id FROM events")))
    finally:
        engine.dispose()


def reference_webhook_ids(db_path: Path) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        return [row[0] for row in conn.execute("SELECT webhook_id FROM events")]
    finally:
        conn.close()


def start_reference(stack: Stack, db_path: Path) -> tuple[Proc, str]:
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
            "--db",
            str(db_path),
            "--workers",
            str(WORKERS),
            "--threads",
            str(THREADS),
        ],
    )
    wait_until(lambda: listening(port), 30, "the reference endpoint to listen")
    return proc, f"http://127.0.0.1:{port}"


def run_leg(name: str, database_url: str | None, args: argparse.Namespace) -> Leg:
    """The bridge, then the reference, one after the other, each alone on the machine."""
    with Stack(database_url=database_url, inline_timeout_s=0, keep=args.keep) as stack:
        if args.keep:
            progress(f"{name}: logs and databases in {stack.dir}")
        web = stack.start_web(workers=WORKERS, threads=THREADS)
        web_url = f"{web.url}/hooks/whmcs"  # type: ignore[attr-defined]
        sent = fresh_requests(args)
        bridge = drive(f"{name} bridge", web, web_url, sent, args)
        web.stop()  # so that it takes no CPU from the reference's run
        check_stored(f"{name} bridge", bridge_webhook_ids(stack.database_url), sent)

        ref_db = stack.dir / "reference.db"
        ref, ref_url = start_reference(stack, ref_db)
        sent = fresh_requests(args)
        reference = drive(f"{name} reference", ref, f"{ref_url}/hooks/whmcs", sent, args)
        ref.stop()
        check_stored(f"{name} reference", reference_webhook_ids(ref_db), sent)
    return Leg(name, bridge, reference)


def report_leg(leg: Leg, args: argparse.Namespace) -> None:
    """Throughput, p50 and p99 of the bridge, each with its ratio to the reference's."""
    bridge, ref = leg.bridge.load, leg.reference.load
    common = {"requests": args.requests, "concurrency": args.concurrency, "errors": 0}
    report(
        f"intake.{leg.name}.throughput",
        bridge.throughput,
        "req/s",
        ratio=bridge.throughput / ref.throughput,
        versus=VERSUS,
        reference=round(ref.throughput, 1),
        cpu_ms_per_req=round(leg.bridge.cpu_ms_per_request, 2),
        ref_cpu_ms_per_req=round(leg.reference.cpu_ms_per_request, 2),
        **common,
    )
    for pct in (50, 99):
        value, versus = bridge.percentile_ms(pct), ref.percentile_ms(pct)
        report(
            f"intake.{leg.name}.p{pct}_ms",
            value,
            "ms",
            ratio=value / versus,
            versus=VERSUS,
            reference=round(versus, 2),
            **common,
        )


def report_rss(legs: list[Leg]) -> None:
    """One figure for all legs: the largest worker peak seen, against the reference's."""
    peak = max(leg.bridge.peak_rss_mb for leg in legs)
    ref_peak = max(leg.reference.peak_rss_mb for leg in legs)
    per_leg = {leg.name: round(leg.bridge.peak_rss_mb, 1) for leg in legs}
    report(
        "web.peak_rss_mb",
        peak,
        "MB",
        ratio=peak / ref_peak,
        versus=VERSUS,
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
                f"{name} leg: {args.warmup} + {args.requests} requests per server; "
                f"load average {load}"
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
