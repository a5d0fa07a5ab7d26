"""Drain time of queued suspends at the configured rate limit, against the bound calls / rate.

`--services` existing services, all applied, get one suspend each while no worker runs
(inline apply off, so every event is queued). Then `--workers` `bridge worker` processes
start together and drain the queue through the one rate-limit row they share. Measured:
- drain time, from starting the workers until the last suspend is `applied`, against the
  bound (API requests the simulator logged during the drain, logins and refusals included,
  since every one takes a slot) / `mailserver.rate_limit_per_s`. It cannot beat 1.0; the
  limiter spaces slots 1.1/rate apart (SPACING_MARGIN in bridge/mailserver/ratelimit.py), so
  about 1.1 plus the workers' start-up means no time is lost between slots;
- the 429s the simulator answered (target 0) and the most requests it saw in any 1-second
  window, against the rate;
- the peak RSS (VmHWM) of the `bridge worker` processes, against the simulator's own peak RSS
  in the same run (one Python process holding the same accounts), as a scale.

Set-up in seconds, not minutes: creating the services through the bridge would cost two calls
each at the same rate limit (over three minutes for 2,000). Instead the DomainAdmins are seeded
into the simulator in one control request, shaped as the bridge's create leaves them (starter
quotas, the client's recovery e-mail, no domains), and `bridge import whmcs --csv` adopts them,
the documented path for accounts that already exist (docs/migrating-from-mailcheap-plugin.md):
it lists the DomainAdmins once (one call per 50) and links each service as applied when
nothing drifts. So each suspend costs what it costs on a bridge-created account: the
DomainAdmin read and the cascade disable (no domains, so no mailbox list to remember; that
keeps 2,000 suspends at 20/s under four minutes, and bench/calls.py measures a suspend with a
domain). The drain ratio does not depend on the calls per suspend: the bound counts them.

Service ids start at `--first-service` (10001): with five-digit ids no username is a prefix of
another, so each lookup (a substring search) is one page whatever the accounts' order.
Exits 1 when a suspend is not applied, the import adopts fewer than all, or a step times out.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine

from bench.calls import (
    AUTH_ROUTE,
    NotConvergedError,
    deliver,
    envelopes,
    expect_queued,
    last_event_id,
    log_mark,
    progress,
    wait_applied,
)
from bench.harness import BIN, ROOT, Proc, Stack, report
from bridge.lifecycle import Action

#: The starter tier of the bench config (product 1) as NMS quota fields.
STARTER_QUOTAS = {
    "quota_domains": 1,
    "quota_domainaliases": 1,
    "quota_aliases": 10,
    "quota_mailboxes": 5,
    "storagequota_total": 5120,
}


def client_of(service: int) -> int:
    """The WHMCS client id `whmcs_envelope` uses by default for a service."""
    return 500 + service % 1000


def seed_accounts(stack: Stack, services: list[int]) -> None:
    """The DomainAdmins as the bridge's create would have left them, in one control request."""
    stack.sim_call(
        "POST",
        "/_sim/seed",
        {
            "accounts": [
                {
                    "username": f"mail{service}",
                    "perm_level": "DomainAdmin",
                    "api_access": 0,
                    "recovery_email": f"owner{client_of(service)}@example.org",
                    "domains": "",
                    **STARTER_QUOTAS,
                }
                for service in services
            ]
        },
    )


def import_services(stack: Stack, services: list[int]) -> None:
    """Adopt the seeded DomainAdmins with `bridge import whmcs`; all must adopt without drift."""
    export = stack.dir / "services.csv"
    with export.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "pid", "userid", "email", "username", "status", "domain"])
        for service in services:
            client = client_of(service)
            writer.writerow(
                [
                    service,
                    1,
                    client,
                    f"owner{client}@example.org",
                    f"mail{service}",
                    "Active",
                    f"client{service}.example.net",
                ]
            )
    done = subprocess.run(
        [
            str(BIN / "bridge"),
            "import",
            "whmcs",
            "--csv",
            str(export),
            "--json",
        ],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])["summary"] if lines else {}
    if done.returncode or summary.get("adopted") != len(services) or summary.get("drift"):
        raise NotConvergedError(f"import: rc={done.returncode} {summary} {done.stderr[-500:]}")


def max_per_second(times: list[float]) -> int:
    """The most requests within any 1-second window (sliding, start at each request)."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def disabled_count(stack: Stack, services: list[int]) -> int:
    """How many of the services' DomainAdmins the simulator holds disabled."""
    names = {f"mail{service}" for service in services}
    accounts = stack.sim_call("GET", "/_sim/state")["accounts"]
    return sum(1 for a in accounts if a["username"] in names and not a["enabled"])


@dataclass(frozen=True)
class Drained:
    """What the simulator and the clock saw while the workers drained the queue."""

    seconds: float
    entries: list[dict[str, Any]]
    workers: list[Proc]


def run_drain(
    stack: Stack, engine: Engine, services: list[int], workers: int, timeout: float
) -> Drained:
    """Queue one suspend per service with no worker running, then time the workers' drain."""
    url = stack.start_web().url  # type: ignore[attr-defined]
    after_id = last_event_id(engine)
    progress(f"queueing {len(services)} suspends (no worker running)")
    expect_queued(deliver(url, envelopes(Action.SUSPEND, services)), "suspend")
    mark = log_mark(stack)
    started = time.monotonic()
    procs = [stack.start_worker() for _ in range(workers)]
    progress(f"{workers} workers started; draining")
    wait_applied(engine, after_id, len(services), timeout, "suspend", on_poll=stack.sample_rss)
    seconds = time.monotonic() - started
    stack.sample_rss()
    entries = stack.sim_requests(mark)["entries"]
    progress(f"drained in {seconds:.1f} s; {len(entries)} API requests")
    if disabled_count(stack, services) != len(services):
        raise NotConvergedError("suspend: applied, yet not every DomainAdmin is disabled")
    return Drained(seconds, entries, procs)


def report_drain(stack: Stack, drained: Drained, suspends: int) -> None:
    """The drain's four result lines."""
    entries, rate = drained.entries, stack.rate
    bound = len(entries) / rate
    times = sorted(entry["time"] for entry in entries)
    throttled = sum(1 for entry in entries if entry["status"] == 429)
    report(
        "drain.seconds",
        drained.seconds,
        "s",
        ratio=drained.seconds / bound,
        versus=f"bound {len(entries)} calls / {rate:g}/s = {bound:.1f} s",
        suspends=suspends,
        workers=len(drained.workers),
        calls=len(entries),
        logins=sum(1 for entry in entries if entry["route"] == AUTH_ROUTE),
        calls_span_s=round(times[-1] - times[0], 1) if times else 0,
    )
    report(
        "drain.429s",
        throttled,
        "responses",
        ratio=throttled / len(entries) if entries else None,
        versus=f"{len(entries)} calls (target 0)",
        sim_rate=stack.sim_rate,
        refused_any=sum(1 for entry in entries if entry["status"] >= 400),
    )
    busiest = max_per_second(times)
    report(
        "drain.max_1s_requests",
        busiest,
        "requests",
        ratio=busiest / rate,
        versus=f"rate {rate:g}/s",
    )
    per_worker = [max(proc.peak_mb.values()) for proc in drained.workers]
    sim_peak = max(stack.sim.peak_mb.values())
    report(
        "worker.peak_rss_mb",
        max(per_worker),
        "MB",
        ratio=max(per_worker) / sim_peak if sim_peak else None,
        versus=f"nmsim process peak RSS {sim_peak:.1f} MB",
        per_worker=",".join(f"{mb:.1f}" for mb in per_worker),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drain",
        description="Drain time of queued suspends at the configured rate limit.",
    )
    parser.add_argument("--services", type=int, default=2000, help="suspends (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="bridge worker processes")
    parser.add_argument("--rate", type=float, default=15, help="bridge calls/s (max 15)")
    parser.add_argument("--sim-rate", type=float, default=20, help="simulator's limit, req/s")
    parser.add_argument(
        "--first-service", type=int, default=10001, help="first WHMCS service id (10001)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds the drain may take (default 900)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    services = list(range(args.first_service, args.first_service + args.services))
    started = time.monotonic()
    try:
        with Stack(rate=args.rate, sim_rate=args.sim_rate) as stack:
            engine = create_engine(stack.database_url)
            try:
                progress(f"set-up: seeding and importing {len(services)} services")
                seed_accounts(stack, services)
                import_services(stack, services)
                progress(f"set-up done in {time.monotonic() - started:.0f} s")
                drained = run_drain(stack, engine, services, args.workers, args.timeout)
                report_drain(stack, drained, len(services))
            finally:
                engine.dispose()
    except (NotConvergedError, TimeoutError) as exc:
        print(f"bench.drain FAILED: {exc}", file=sys.stderr)
        return 1
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
