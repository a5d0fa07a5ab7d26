"""Mail-server calls per lifecycle action, and per duplicate delivery, from nmsim's request log.

Production shape: gunicorn takes the signed webhooks with inline apply off
(`intake.inline_timeout_s: 0`), so every event is queued and one `bridge worker` reconciles
it; all mail-server calls in the run are then the worker's, and the simulator's request log
attributes them exactly. (An inline apply runs the same `reconcile_service`, so an action
costs the same calls either way; only the process making them differs.)

Steps:
1. Set-up (not measured): `--pool` creates; once applied, each DomainAdmin gets a domain with
   three mailboxes, one disabled by the customer (seeded into the simulator, then the
   DomainAdmin's `domains` patched through the API), so suspend and unsuspend do their full
   work: remember the enabled mailboxes, keep the customer's disabled one disabled.
2. `--actions` mixed actions (MIX below), one phase per action so each call is attributed:
   mark the log's `last_seq`, deliver the phase's events, wait until every one is `applied`,
   then count the API requests after the mark (logins apart).
3. The same deliveries again, same `webhook-id` and body: each must answer the recorded
   outcome (200, `applied`, `duplicate: true`), store no event and cost no call.

One result line per action (calls per action vs MINIMUM_CALLS), a total line and a duplicates
line. Exits 1 when an event is not applied, an answer is wrong, or a phase times out.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import Engine, create_engine, text

from bench.harness import SIM_MASTER, Proc, Stack, report, signed, wait_until
from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action

SOURCE = "whmcs"
AUTH_ROUTE = "/api/v1/auth/"
#: Share of the mixed actions per lifecycle action, in the order the phases run (each phase
#: acts on the services the earlier ones left: suspend, then unsuspend the same ones).
MIX: dict[Action, int] = {
    Action.CREATE: 3,
    Action.CHANGE_PACKAGE: 3,
    Action.CHANGE_PASSWORD: 3,
    Action.TRANSFER: 3,
    Action.SUSPEND: 3,
    Action.UNSUSPEND: 3,
    Action.TERMINATE: 2,
}
#: The fewest NMS API v1 calls each action needs under the reconciler's plan
#: (bridge/provisioning/reconcile.py) for the pooled services' shape (one domain, three
#: mailboxes, one of them disabled by the customer). The bridge is level-triggered: every
#: reconcile reads the DomainAdmin first (one GET /accounts/?search=) and writes only what
#: differs, so that read is part of each minimum.
MINIMUM_CALLS: dict[Action, int] = {
    # read (absent) + POST /accounts/ with the quotas, password hash and recovery e-mail
    Action.CREATE: 2,
    # read + one PATCH carrying all five quota fields
    Action.CHANGE_PACKAGE: 2,
    # read + one PATCH with the SHA512-crypt hash
    Action.CHANGE_PASSWORD: 2,
    # client move: read + one PATCH of recovery_email to the new client's address
    Action.TRANSFER: 2,
    # read + GET the domain's mailboxes (to remember the enabled ones) + cascade disable
    Action.SUSPEND: 3,
    # read + cascade enable + GET the mailboxes + PATCH re-disabling the customer's disabled
    # one (the NMS cascade enable enables everything: it has no memory)
    Action.UNSUSPEND: 4,
    # read + cascade DELETE (the bench config has termination.grace_days 0)
    Action.TERMINATE: 2,
}
MAILBOXES = (("info", 1), ("sales", 1), ("old", 0))


class NotConvergedError(Exception):
    """Something did not end as it must: an event not applied, a wrong answer."""


@dataclass(frozen=True)
class Delivery:
    """One webhook as the billing system sends it: kept to be sent again verbatim."""

    payload: dict[str, Any]
    webhook_id: str


@dataclass(frozen=True)
class Tally:
    """The simulator's log entries of one phase, summed up."""

    calls: int  # API requests other than logins
    logins: int
    refused: int  # answers >= 400 (429s included) and dropped connections
    routes: Counter[str]

    @classmethod
    def of(cls, entries: Iterable[dict[str, Any]]) -> Tally:
        """Count the entries; `routes` by method and route, without the /api/v1 prefix."""
        logins = calls = refused = 0
        routes: Counter[str] = Counter()
        for entry in entries:
            if entry["route"] == AUTH_ROUTE:
                logins += 1
            else:
                calls += 1
                route = (entry["route"] or entry["path"]).removeprefix("/api/v1")
                routes[f"{entry['method']} {route}"] += 1
            if entry["status"] >= 400 or entry["status"] == 0:  # 0: connection dropped
                refused += 1
        return cls(calls, logins, refused, routes)

    def route_summary(self) -> str:
        """e.g. `GET /accounts/:150,PATCH /accounts/<username>/:150`."""
        return ",".join(f"{route}:{n}" for route, n in sorted(self.routes.items()))


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the result lines)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def deliver(url: str, deliveries: list[Delivery], threads: int = 8) -> list[tuple[int, Any]]:
    """Post the deliveries, signed, from `threads` connections; (status, JSON) per delivery."""
    local = threading.local()

    def post(item: Delivery) -> tuple[int, Any]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        body, headers = signed(SOURCE, item.payload, item.webhook_id)
        answer = local.http.post(f"{url}/hooks/{SOURCE}", data=body, headers=headers, timeout=60)
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, deliveries))


def expect_queued(answers: list[tuple[int, Any]], what: str) -> None:
    """With inline apply off every new event must be stored and queued (202)."""
    wrong = [(code, body) for code, body in answers if code != 202 or body["status"] != "queued"]
    if wrong:
        raise NotConvergedError(f"{what}: {len(wrong)} answers not 202 queued, e.g. {wrong[0]}")


def last_event_id(engine: Engine) -> int:
    """The newest event's id (0 when none): events after it belong to the next phase."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM events")).scalar_one())


def event_statuses(engine: Engine, after_id: int) -> Counter[str]:
    """How many events newer than `after_id` stand in each status."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, COUNT(*) FROM events WHERE id > :after GROUP BY status"),
            {"after": after_id},
        )
        return Counter({status: count for status, count in rows})


def wait_applied(
    engine: Engine,
    after_id: int,
    expected: int,
    timeout: float,
    what: str,
    on_poll: Callable[[], None] = lambda: None,
) -> None:
    """Wait until the `expected` events after `after_id` are settled; all must be applied."""
    shown = [time.monotonic()]

    def settled() -> Counter[str] | None:
        on_poll()
        counts = event_statuses(engine, after_id)
        if time.monotonic() - shown[0] >= 10:
            shown[0] = time.monotonic()
            progress(f"{what}: {counts['applied']}/{expected} applied")
        pending = counts["queued"] + counts["received"]
        return counts if sum(counts.values()) >= expected and not pending else None

    counts = wait_until(settled, timeout, f"{expected} {what} events to settle", every=0.2)
    if counts["applied"] != expected:
        with engine.connect() as conn:
            reasons = conn.execute(
                text(
                    "SELECT status, reason, COUNT(*) FROM events WHERE id > :after "
                    "AND status != 'applied' GROUP BY status, reason"
                ),
                {"after": after_id},
            ).all()
        raise NotConvergedError(f"{what}: {dict(counts)}; not applied: {reasons}")


def log_mark(stack: Stack) -> int:
    """The simulator log's last sequence number: later entries are the next phase's."""
    return int(stack.sim_requests(10**15)["last_seq"])


def envelopes(action: Action, services: Iterable[int]) -> list[Delivery]:
    """One WHMCS module call per service, as the module would send it."""
    deliveries = []
    for service in services:
        options: dict[str, Any] = {}
        if action is Action.CHANGE_PACKAGE:
            options["product"] = 2  # starter -> business: every quota field changes
        elif action is Action.TRANSFER:
            options["client"] = 5000 + service
            options["previous_client"] = 500 + service % 1000  # whmcs_envelope's default
        payload = whmcs_envelope(action, service, **options)
        deliveries.append(Delivery(payload, f"bench-{action.value}-{service}"))
    return deliveries


def split_actions(total: int) -> dict[Action, int]:
    """`total` actions shared out by MIX (the first phases take any remainder)."""
    weight = sum(MIX.values())
    counts = {action: total * share // weight for action, share in MIX.items()}
    for action in list(counts)[: total - sum(counts.values())]:
        counts[action] += 1
    return counts


def give_domains(stack: Stack, services: list[int]) -> None:
    """Give each service's DomainAdmin a domain with MAILBOXES, as a customer would have.

    The simulator's own rate limit is lifted meanwhile: this is the customer's doing, not the
    bridge's, and must not eat the bridge's allowance. These requests precede every mark."""
    domains = {service: f"client{service}.example.net" for service in services}
    stack.sim_call(
        "POST",
        "/_sim/seed",
        {
            "domains": [{"domain": domain} for domain in domains.values()],
            "accounts": [
                {"username": f"{box}@{domain}", "perm_level": "MailUser", "enabled": enabled}
                for domain in domains.values()
                for box, enabled in MAILBOXES
            ],
        },
    )
    token = stack.sim_call("POST", "/_sim/tokens", {"username": SIM_MASTER[0]})["auth_token"]
    stack.sim_call("PATCH", "/_sim/config", {"rate_limit": 0})
    try:
        for service, domain in domains.items():
            answer = stack.http.patch(
                f"{stack.sim_url}/api/v1/accounts/mail{service}/",
                json={"domains": domain},
                auth=(SIM_MASTER[0], token),
                timeout=30,
            )
            answer.raise_for_status()
    finally:
        stack.sim_call("PATCH", "/_sim/config", {"rate_limit": stack.sim_rate})


@dataclass(frozen=True)
class Phase:
    """The outcome of one measured phase."""

    action: Action
    deliveries: list[Delivery]
    tally: Tally
    seconds: float


def run_phase(
    stack: Stack, url: str, engine: Engine, action: Action, services: list[int], timeout: float
) -> Phase:
    """Deliver `action` for each service, wait until all are applied, count the calls."""
    deliveries = envelopes(action, services)
    after_id, mark = last_event_id(engine), log_mark(stack)
    started = time.monotonic()
    expect_queued(deliver(url, deliveries), action.value)
    wait_applied(engine, after_id, len(deliveries), timeout, action.value)
    seconds = time.monotonic() - started
    tally = Tally.of(stack.sim_requests(mark)["entries"])
    progress(f"{action.value}: {len(deliveries)} applied in {seconds:.1f} s, {tally.calls} calls")
    return Phase(action, deliveries, tally, seconds)


def resend(stack: Stack, url: str, engine: Engine, phases: list[Phase]) -> None:
    """Deliver every measured event again and report what the duplicates cost."""
    deliveries = [d for phase in phases for d in phase.deliveries]
    original_calls = sum(phase.tally.calls + phase.tally.logins for phase in phases)
    before_id, mark = last_event_id(engine), log_mark(stack)
    answers = deliver(url, deliveries)
    good = sum(
        1
        for code, body in answers
        if code == 200 and body.get("status") == "applied" and body.get("duplicate") is True
    )
    new_events = last_event_id(engine) - before_id
    tally = Tally.of(stack.sim_requests(mark)["entries"])
    total = tally.calls + tally.logins
    report(
        "calls.duplicates",
        total,
        "calls",
        ratio=total / original_calls if original_calls else None,
        versus=f"{original_calls} calls of the {len(deliveries)} originals (target 0)",
        deliveries=len(deliveries),
        answered_applied_duplicate=good,
        new_events=new_events,
    )
    if good != len(deliveries) or new_events or total:
        bad = next((a for a in answers if a[0] != 200 or a[1].get("duplicate") is not True), None)
        raise NotConvergedError(
            f"duplicates: {good}/{len(deliveries)} answered as recorded (e.g. {bad}), "
            f"{new_events} new events, {total} mail-server calls"
        )


def report_phases(phases: list[Phase], stack: Stack, worker: Proc) -> None:
    """One line per action, then the total with the run's logins and the worker's peak RSS."""
    for phase in phases:
        n = len(phase.deliveries)
        least = MINIMUM_CALLS[phase.action]
        report(
            f"calls.{phase.action.value}",
            phase.tally.calls / n,
            "calls/act",
            ratio=phase.tally.calls / n / least,
            versus=f"minimum {least}",
            events=n,
            logins=phase.tally.logins,
            refused=phase.tally.refused,
            seconds=round(phase.seconds, 1),
            routes=phase.tally.route_summary(),
        )
    events = sum(len(phase.deliveries) for phase in phases)
    calls = sum(phase.tally.calls for phase in phases)
    least = sum(MINIMUM_CALLS[phase.action] * len(phase.deliveries) for phase in phases)
    counters = stack.sim_requests(10**15)["counts"]
    run_logins = sum(c["count"] for c in counters if c["route"] == AUTH_ROUTE)
    worker.sample_rss()
    report(
        "calls.total",
        calls / events,
        "calls/act",
        ratio=calls / least,
        versus=f"minimum {least / events:.2f} ({least} calls)",
        events=events,
        calls=calls,
        logins_measured=sum(phase.tally.logins for phase in phases),
        logins_whole_run=run_logins,
        worker_processes=1,
        worker_peak_rss_mb=round(max(worker.peak_mb.values()), 1),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.calls",
        description="Mail-server calls per lifecycle action and per duplicate delivery.",
    )
    parser.add_argument("--actions", type=int, default=1000, help="mixed actions (default 1000)")
    parser.add_argument(
        "--pool", type=int, default=200, help="services created before the measured phases"
    )
    parser.add_argument(
        "--first-service", type=int, default=1001, help="first WHMCS service id (default 1001)"
    )
    parser.add_argument("--rate", type=float, default=15, help="bridge calls/s (max 15)")
    parser.add_argument("--sim-rate", type=float, default=20, help="simulator's limit, req/s")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds one phase may take (default 600)"
    )
    args = parser.parse_args(argv)
    largest = max(split_actions(args.actions).values())
    if args.pool < largest:
        parser.error(f"--pool must be at least {largest}, the largest phase of --actions")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = split_actions(args.actions)
    pool = list(range(args.first_service, args.first_service + args.pool))
    fresh = list(range(pool[-1] + 1, pool[-1] + 1 + counts[Action.CREATE]))
    started = time.monotonic()
    try:
        with Stack(rate=args.rate, sim_rate=args.sim_rate) as stack:
            engine = create_engine(stack.database_url)
            try:
                url = stack.start_web().url  # type: ignore[attr-defined]
                worker = stack.start_worker()
                progress(f"set-up: creating {len(pool)} services")
                after_id = last_event_id(engine)
                expect_queued(deliver(url, envelopes(Action.CREATE, pool)), "set-up create")
                wait_applied(engine, after_id, len(pool), args.timeout, "set-up create")
                give_domains(stack, pool)
                phases = []
                for action, n in counts.items():
                    services = fresh if action is Action.CREATE else pool[:n]
                    phases.append(run_phase(stack, url, engine, action, services, args.timeout))
                report_phases(phases, stack, worker)
                progress(f"duplicates: sending the {args.actions} deliveries again")
                resend(stack, url, engine, phases)
            finally:
                engine.dispose()
    except (NotConvergedError, TimeoutError) as exc:
        print(f"bench.calls FAILED: {exc}", file=sys.stderr)
        return 1
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
