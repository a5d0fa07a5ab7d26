"""Growth benchmark: intake and the staff pages with 1,000,000 stored events, against the same
server and database when nearly empty, measured in the same run, on SQLite and PostgreSQL.

    PYTHONPATH=. .venv/bin/python -m bench.growth [--events 1000000] [--legs sqlite,postgresql]

Not part of the quick `make bench`: seeding and indexing a million rows takes minutes on a
small machine (`make bench BENCH_ARGS=--growth` adds it). Each leg:
1. a fresh Stack and the bridge's gunicorn (2 workers x 8 threads), a viewer with a token
   and a console login;
2. nearly empty: the intake of bench.load's "mix" (warm-up, then timed), and each staff page
   (PAGES: the events list first and filtered, with its per-status counts, through the API
   and the console) timed as the median of several reads;
3. `--events` events seeded with one INSERT ... SELECT (a recursive CTE on SQLite,
   generate_series on PostgreSQL) for 50,000 services: 80% whmcs, 20% blesta; 93.5% applied,
   3% superseded, 2% failed (half of them marked resolved), 1% ignored, 0.5% queued; received
   over the past 365 days; each with a redacted WHMCS envelope as its payload. PostgreSQL is
   then vacuumed and analyzed, as its autovacuum would; SQLite is left as a bridge leaves it;
4. the same intake and pages again. Ratios: intake at 1M / nearly empty (target >= 0.9);
   each page's median at 1M against its target (first page < 200 ms, the filtered pages,
   which are mostly their per-status counts, < 500 ms), with the nearly empty time beside.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from typing import Any

import requests
from sqlalchemy import create_engine, text

from bench.harness import Stack, postgres_url, report
from bench.intake import (
    FIRST_SERVICE,
    THREADS,
    WORKERS,
    BenchFailed,
    Measured,
    progress,
    staff_token,
    timed,
)
from bench.load import kind_requests, run_load

STAFF_PASSWORD = "Bench-Viewer-Passw0rd-1"  # bench.intake.staff_token's
#: (name, path, whose, target ms): API pages with the token, console pages logged in.
PAGES = (
    ("api.first_page", "/api/events", "api", 200),
    ("api.source", "/api/events?source=whmcs", "api", 500),
    ("api.failed", "/api/events?status=failed", "api", 500),
    ("api.source_failed", "/api/events?source=whmcs&status=failed", "api", 500),
    ("console.first_page", "/admin/events", "console", 200),
    ("console.source", "/admin/events?source=whmcs", "console", 500),
    ("console.source_failed", "/admin/events?source=whmcs&status=failed", "console", 500),
)
INTAKE_TARGET = 0.9
EMPTY_SCHEMA = "bench_growth_empty"
SERVICES = 50_000
PAYLOAD = json.dumps(
    {
        "event": "SuspendAccount",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "params": {
            "serviceid": 1,
            "pid": 1,
            "userid": 501,
            "username": "mail1",
            "domain": "example.org",
            "password": "[redacted]",
            "clientsdetails": {
                "email": "owner501@example.org",
                "firstname": "Ada",
                "lastname": "Owner",
            },
            "configoptions": {"extra_mailboxes": 0},
            "customfields": {},
            "configoption1": "",
            "suspendreason": "Overdue on Payment",
        },
    }
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth",
        description="Intake and the staff pages (events list, per-status counts) with "
        "--events stored events against a nearly empty ledger, in the same run.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="(%(default)s)")
    parser.add_argument("--requests", type=int, default=1500, help="timed intake (%(default)s)")
    parser.add_argument("--warmup", type=int, default=150, help="untimed intake (%(default)s)")
    parser.add_argument("--reads", type=int, default=7, help="timed reads per page (%(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="intake rounds on each database (%(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="in flight (%(default)s)")
    parser.add_argument("--processes", type=int, default=2, help="generator processes")
    parser.add_argument("--legs", default="sqlite,postgresql", help="backends (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep each leg's folder")
    args = parser.parse_args(argv)
    if unknown := set(args.legs.split(",")) - {"sqlite", "postgresql"}:
        parser.error(f"unknown leg(s): {', '.join(sorted(unknown))}")
    if args.events < SERVICES:
        parser.error(f"--events must be at least {SERVICES}")
    return args


def seed_sql(dialect: str, count: int) -> list[str]:
    """The statements that seed `count` events (ids after the existing ones) and SERVICES
    services, for one dialect."""
    if dialect == "postgresql":
        numbers = f"generate_series(1, {count}) AS s(n)"
        service_numbers = f"generate_series(1, {SERVICES}) AS s(n)"
        at = f"now() - make_interval(secs => ({count} - n) * 31.536)"
        sha = "lpad(n::text, 64, '0')"
        payload = "CAST(:payload AS json)"
        prefix = ""
        ref = "'g' || n"
    else:
        numbers = "seq"
        service_numbers = "seq"
        at = (
            f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || CAST(({count} - n) * 31.536 AS "
            "INTEGER) || ' seconds') || '.000000'"
        )
        sha = "printf('%064d', n)"
        payload = ":payload"
        prefix = "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {})"
        ref = "'g' || n"
    source = "CASE WHEN {k} % 5 = 0 THEN 'blesta' ELSE 'whmcs' END"
    services = f"""
        {prefix.format(SERVICES)}
        INSERT INTO services (source, service_ref, username, addons, aspect_times,
            desired_state, generation, applied_generation, attempt_count, password_pending,
            create_requested, product_id, created_at, updated_at)
        SELECT {source.format(k="n")}, {ref}, 'growth' || n, '{{}}', '{{}}', 'active',
            1, 1, 0, false, true, '1', {at}, {at}
        FROM {service_numbers}"""
    bucket = "(n % 1000)"
    status = (
        f"CASE WHEN {bucket} < 5 THEN 'queued' WHEN {bucket} < 15 THEN 'ignored' "
        f"WHEN {bucket} < 35 THEN 'failed' WHEN {bucket} < 65 THEN 'superseded' "
        "ELSE 'applied' END"
    )
    reason = (
        f"CASE WHEN {bucket} < 5 THEN NULL WHEN {bucket} < 15 THEN 'not_provisioning' "
        f"WHEN {bucket} < 35 THEN 'unmapped_product' WHEN {bucket} < 65 THEN 'superseded' "
        "ELSE NULL END"
    )
    resolved = f"CASE WHEN {bucket} >= 15 AND {bucket} < 35 AND n % 2 = 0 THEN {at} END"
    service_id = f"(base.id + n % {SERVICES})"
    events = f"""
        {prefix.format(count)}
        INSERT INTO events (source, webhook_id, body_sha256, native_event, action,
            service_id, service_ref, occurred_at, received_at, payload, status, reason,
            message, generation, finished_at, resolved_at, resolved_by)
        SELECT {source.format(k=f"(n % {SERVICES} + 1)")}, 'growth-' || n, {sha},
            'SuspendAccount', 'suspend', {service_id}, 'g' || (n % {SERVICES} + 1), {at}, {at},
            {payload}, {status}, {reason}, NULL, n % 7,
            CASE WHEN {bucket} < 5 THEN NULL ELSE {at} END, {resolved},
            CASE WHEN {bucket} >= 15 AND {bucket} < 35 AND n % 2 = 0
                THEN 'ops@example.org' END
        FROM {numbers}, (SELECT min(id) AS id FROM services WHERE service_ref = 'g1') AS base"""
    return [services, events]


def seed(database_url: str, count: int) -> float:
    """Seed the ledger; seconds it took (statistics included on PostgreSQL)."""
    engine = create_engine(database_url)
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            for statement in seed_sql(engine.dialect.name, count):
                conn.execute(text(statement), {"payload": PAYLOAD})
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does after the load
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
    finally:
        engine.dispose()
    if stored < count:
        raise BenchFailed(f"seeding stored {stored} events, expected at least {count}")
    return time.monotonic() - started


def console_login(url: str, http: requests.Session, email: str) -> None:
    """Log in through the console's form, as a browser does."""
    page = http.get(f"{url}/admin/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if token is None:
        raise BenchFailed("the console's login page has no CSRF token")
    answer = http.post(
        f"{url}/admin/login",
        data={"email": email, "password": STAFF_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code != 302:
        raise BenchFailed(f"console login answered {answer.status_code}")


def read_pages(url: str, token: str, console: requests.Session, reads: int) -> dict[str, float]:
    """Median milliseconds of each page (one untimed read first)."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    medians = {}
    for name, path, whose, _target in PAGES:
        http = api if whose == "api" else console
        times = []
        for i in range(reads + 1):
            started = time.perf_counter()
            answer = http.get(f"{url}{path}", timeout=120, allow_redirects=False)
            took = (time.perf_counter() - started) * 1000
            if answer.status_code != 200:
                raise BenchFailed(f"{path} answered {answer.status_code}")
            if i:
                times.append(took)
        medians[name] = statistics.median(times)
        progress(f"  {name}: median {medians[name]:.0f} ms")
    api.close()
    return medians


def intake(name: str, web: Any, url: str, args: argparse.Namespace, first: int) -> Measured:
    """bench.load's mix: warm-up, then timed."""
    warmup = kind_requests("mix", args.warmup, first_service=first + 50_000)
    run_load(f"{url}/hooks/whmcs", warmup, concurrency=args.concurrency, processes=args.processes)
    batch = kind_requests("mix", args.requests, first_service=first)
    measured = timed(name, web, f"{url}/hooks/whmcs", batch, args)
    if measured.load.errors:
        raise BenchFailed(f"{name}: {measured.load.errors} answers were not 2xx")
    return measured


def run_leg(name: str, database_url: str | None, args: argparse.Namespace) -> None:
    """Two stacks side by side, one seeded: intake alternates between them, round after
    round, so that the machine's other load weighs on both alike."""
    # PostgreSQL: the nearly empty ledger in a schema of its own in the same database.
    second_url = None
    if database_url:
        joiner = "&" if "?" in database_url else "?"
        second_url = f"{database_url}{joiner}options=-csearch_path%3D{EMPTY_SCHEMA}"
    with (
        Stack(database_url=database_url, inline_timeout_s=0, keep=args.keep) as full,
        Stack(database_url=second_url, inline_timeout_s=0, keep=args.keep) as empty,
    ):
        progress(f"{name}: seeding {args.events:,} events")
        took = seed(full.database_url, args.events)
        progress(f"{name}: seeded in {took:.0f} s")
        token = {stack: staff_token(stack) for stack in (empty, full)}
        webs = {stack: stack.start_web(workers=WORKERS, threads=THREADS) for stack in (empty, full)}
        rounds: dict[Stack, list[Measured]] = {empty: [], full: []}
        for r in range(args.rounds):
            for stack, label in ((empty, "nearly empty"), (full, f"{args.events:,}")):
                web = webs[stack]
                rounds[stack].append(
                    intake(
                        f"{name} intake, {label}, round {r + 1}",
                        web,
                        web.url,
                        args,
                        FIRST_SERVICE["mix"] + 100_000 * r,
                    )  # type: ignore[attr-defined]
                )
        pages = {}
        for stack, label in ((empty, "nearly empty"), (full, f"{args.events:,}")):
            url = webs[stack].url  # type: ignore[attr-defined]
            console = requests.Session()
            console_login(url, console, "bench-viewer@example.org")
            progress(f"{name}: pages, {label}")
            pages[stack] = read_pages(url, token[stack], console, args.reads)
            console.close()
        for web in webs.values():
            web.stop()
    millions = f"{args.events / 1e6:g}M"
    per_round = {
        stack: statistics.median(m.load.throughput for m in rounds[stack]) for stack in rounds
    }
    cpu = {
        stack: statistics.median(m.cpu_ms_per_request for m in rounds[stack]) for stack in rounds
    }
    # Each round drives the nearly empty ledger and then the full one back to back: the ratio
    # is the median of the rounds' own ratios, so a change in the machine's other load between
    # rounds does not count as growth (the medians of each side are shown too).
    paired = statistics.median(
        f.load.throughput / e.load.throughput
        for e, f in zip(rounds[empty], rounds[full], strict=True)
    )
    report(
        f"growth.{name}.intake_{millions}.throughput",
        per_round[full],
        "req/s",
        ratio=paired,
        versus=f"the same intake nearly empty, round by round (target >= {INTAKE_TARGET})",
        empty=round(per_round[empty], 1),
        round_ratios="/".join(
            f"{f.load.throughput / e.load.throughput:.2f}"
            for e, f in zip(rounds[empty], rounds[full], strict=True)
        ),
        rounds=args.rounds,
        cpu_ms=round(cpu[full], 2),
        empty_cpu_ms=round(cpu[empty], 2),
        seed_s=round(took),
    )
    for page, path, _whose, target in PAGES:
        report(
            f"growth.{name}.{page}_ms",
            pages[full][page],
            "ms",
            ratio=pages[full][page] / target,
            versus=f"target < {target} ms at {millions} ({path})",
            empty_ms=round(pages[empty][page], 1),
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for name in args.legs.split(","):
            if name == "sqlite":
                url = None
            elif (url := postgres_url("bench_growth")) is None:
                continue
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            progress(f"{name} leg: {args.events:,} events; load average {load}")
            run_leg(name, url, args)
    except BenchFailed as exc:
        print(f"growth FAILED: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
