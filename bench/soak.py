"""Soak: thousands of mixed billing events through the bridge's real processes, with a sick
mail server and processes crashing, then proof that nothing was lost.

    PYTHONPATH=. .venv/bin/python -m bench.soak [--events 10000 --services 1000 ...]

Two billing systems (WHMCS and Blesta) send per-service event sequences (create, then
suspend/unsuspend/change_package/change_password/transfer/renew, some terminate, some WHMCS
services are created again) to two gunicorn app processes. Like real billing systems they
keep each service's events in order, interleave services, and redeliver the same webhook-id
and body until the bridge answers. A few event pairs are delivered out of order with their
original billing times (a billing system's outbox re-sending late), which the bridge must
store as `superseded` where a newer event already set the same state.

Meanwhile the simulator adds latency, fails 5% of API calls (HTML 502, later JSON 500) and
is down once for `--outage-s`; a chaos thread SIGKILLs a random app or worker process and
restarts it. At the end the faults stop, the ledger drains, and the soak checks:

1. every webhook-id that got an answer is stored exactly once (none lost, none invented);
2. every event is accounted for: `applied`, `superseded`, or `failed` with a reason (renewals
   are `applied` at intake: the bridge records them and provisions nothing; `ignored` is not
   expected because no Blesta event here is a no-op), none left `received`/`queued`;
3. every service's DomainAdmin in the simulator matches the state computed here from the
   events sent (exists, enabled, quotas from the config's tiers and add-ons, recovery e-mail
   of the current client, the last password sent), and no other DomainAdmin exists.

It prints the counts and exits 1 if anything was lost, unaccounted, refused or mismatched,
or if the ledger did not drain within `--drain-timeout`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from passlib.hash import sha512_crypt
from sqlalchemy import Engine, create_engine, text

from bench.harness import (
    Proc,
    Stack,
    free_port,
    postgres_url,
    report,
    signed,
    wait_until,
)
from bridge.adapters.samples import sample
from bridge.lifecycle import Action

#: Bundle field -> simulator account field (the NMS API's names, written out here on purpose
#: so the check does not reuse the bridge's own mapping).
NMS_QUOTAS = {
    "domains": "quota_domains",
    "domain_aliases": "quota_domainaliases",
    "aliases": "quota_aliases",
    "mailboxes": "quota_mailboxes",
    "storage_mb": "storagequota_total",
}
#: What a billing system sends next for a service in this lifecycle state, and how often.
NEXT_ACTION: dict[str, dict[Action, int]] = {
    "active": {
        Action.SUSPEND: 20,
        Action.CHANGE_PACKAGE: 20,
        Action.CHANGE_PASSWORD: 15,
        Action.TRANSFER: 10,
        Action.RENEW: 15,
    },
    "suspended": {
        Action.UNSUSPEND: 50,
        Action.CHANGE_PASSWORD: 8,
        Action.CHANGE_PACKAGE: 5,
        Action.RENEW: 8,
    },
}
FINAL_STATUSES = {"applied", "superseded", "failed"}
PROGRESS_EVERY_S = 10.0


# --- the billing side: scenario and expected final state ----------------------------------


@dataclass
class Hook:
    """One billing event: built when first sent, then redelivered byte for byte."""

    source: str
    number: int
    action: Action
    options: dict[str, Any]
    webhook_id: str
    payload: dict[str, Any] | None = None


@dataclass
class Billing:
    """What the billing system holds for one service after the events so far."""

    source: str
    number: int
    product: int
    extra_mailboxes: int
    client: int
    lifecycle: str = "none"  # none | active | suspended | terminated
    password: str | None = None  # None: never sent (a Blesta create sends none)

    @property
    def username(self) -> str:
        return f"{'mail' if self.source == 'whmcs' else 'blesta'}{self.number}"

    @property
    def email(self) -> str:
        # The sample payloads' client e-mail per billing system.
        if self.source == "whmcs":
            return f"owner{self.client}@example.org"
        return f"robin{self.client}@example.com"


@dataclass
class ServicePlan:
    """One service's events in billing order, and how far the sender got."""

    billing: Billing
    hooks: list[Hook]
    sent: int = 0
    last_sent_at: float = 0.0


def password(rng: random.Random) -> str:
    """A password the NMS policy accepts (12+ chars, upper, lower, digit)."""
    body = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(13))
    return body + rng.choice(string.ascii_uppercase) + rng.choice(string.ascii_lowercase) + "7"


def next_action(rng: random.Random, billing: Billing, last: bool) -> Action:
    """A plausible next event: create first; terminate mostly last (WHMCS may re-create)."""
    if billing.lifecycle in ("none", "terminated"):
        return Action.CREATE
    can_recreate = billing.source == "whmcs"
    if (last and rng.random() < 0.2) or (not last and can_recreate and rng.random() < 0.02):
        return Action.TERMINATE
    weights = NEXT_ACTION[billing.lifecycle]
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def apply(rng: random.Random, billing: Billing, action: Action) -> dict[str, Any]:
    """Move the billing model by one action; the options its payload carries."""
    options: dict[str, Any] = {}
    if action is Action.CREATE:
        billing.lifecycle = "active"
        if billing.source == "whmcs":
            billing.password = options["password"] = password(rng)
    elif action in (Action.SUSPEND, Action.UNSUSPEND, Action.TERMINATE):
        billing.lifecycle = {
            Action.SUSPEND: "suspended",
            Action.UNSUSPEND: "active",
            Action.TERMINATE: "terminated",
        }[action]
    elif action is Action.CHANGE_PACKAGE:
        billing.product = rng.choice([1, 2])
        if billing.source == "whmcs":
            billing.extra_mailboxes = rng.randrange(6)
    elif action is Action.CHANGE_PASSWORD:
        billing.password = options["password"] = password(rng)
    elif action is Action.TRANSFER:
        options["previous_client"] = billing.client
        billing.client = rng.randrange(20000, 30000)
    # Every payload carries the service's current product, add-ons and client, as WHMCS
    # module calls and Blesta service events do.
    options.update(product=billing.product, client=billing.client)
    if billing.source == "whmcs":
        options["addons"] = {"extra_mailboxes": billing.extra_mailboxes}
    return options


def event_counts(rng: random.Random, events: int, services: int) -> list[int]:
    """How many events each service gets: at least its create, `events` in total."""
    counts = [1] * services
    for _ in range(events - services):
        counts[rng.randrange(services)] += 1
    return counts


def build_scenario(rng: random.Random, events: int, services: int) -> list[ServicePlan]:
    """Per-service event sequences, half WHMCS, half Blesta, with the billing end state."""
    plans = []
    for index, count in enumerate(event_counts(rng, events, services)):
        source = "whmcs" if index % 2 == 0 else "blesta"
        number = 1001 + index // 2
        billing = Billing(
            source, number, product=rng.choice([1, 2]), extra_mailboxes=0, client=10000 + number
        )
        hooks = []
        for position in range(count):
            action = next_action(rng, billing, last=position == count - 1)
            options = apply(rng, billing, action)
            hook_id = f"msg_soak_{source}_{number}_{position}_{rng.getrandbits(64):016x}"
            hooks.append(Hook(source, number, action, options, hook_id))
        plans.append(ServicePlan(billing, hooks))
    return plans


def expected_accounts(plans: list[ServicePlan], config: dict[str, Any]) -> dict[str, dict]:
    """Username -> the DomainAdmin fields the simulator must show, for services that exist."""
    out = {}
    for plan in plans:
        billing = plan.billing
        if billing.lifecycle == "terminated":
            continue
        tier = config["tiers"][config["products"][billing.source][billing.product]]
        bundle = dict(tier)
        per_unit = config["addons"].get(billing.source, {}).get("extra_mailboxes", {})
        for name, amount in per_unit.items():
            bundle[name] += amount * billing.extra_mailboxes
        fields = {NMS_QUOTAS[name]: value for name, value in bundle.items()}
        fields.update(enabled=int(billing.lifecycle == "active"), recovery_email=billing.email)
        out[billing.username] = {"fields": fields, "password": billing.password}
    return out


def payload_for(hook: Hook, occurred: datetime) -> dict[str, Any]:
    """The body the billing system posts, with the billing time of the event."""
    if hook.source == "whmcs":
        return sample("whmcs", hook.action, hook.number, occurred_at=occurred, **hook.options)
    body = sample("blesta", hook.action, hook.number, **hook.options)
    # Our Blesta module adds when the step ran (kept when it sends the same step again).
    body["occurred_at"] = occurred.isoformat()
    return body


# --- the bridge's processes and the chaos ------------------------------------------------


@dataclass
class Slot:
    """One of the long-running bridge processes; `proc` changes on every restart."""

    kind: str  # app | worker
    proc: Proc
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(stack: Stack, kind: str, port: int | None = None) -> Proc:
    """Start an app (gunicorn on `port`) or a `bridge worker`; a second try if an app does
    not come up (its port can still be held for a moment by the crashed one)."""
    if kind == "worker":
        return stack.start_worker()
    try:
        return stack.start_web(port=port)
    except TimeoutError:
        stack.procs[-1].kill()
        time.sleep(2)
        return stack.start_web(port=port)


class Chaos(threading.Thread):
    """Every ~`every` seconds: SIGKILL a random app or worker, restart it, shake latency."""

    def __init__(self, stack: Stack, slots: list[Slot], every: float, rng: random.Random) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack, self.slots, self.every, self.rng = stack, slots, every, rng
        self.stop = threading.Event()
        self.kills: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
            slot = self.rng.choice(self.slots)
            slot.proc.kill()
            self.kills[slot.kind] += 1
            # A crashed process is back within seconds (systemd's Restart=always), even
            # when the soak is winding down: every slot must be running at the end.
            time.sleep(self.rng.uniform(0.2, 3.0))
            slot.proc = start(self.stack, slot.kind, slot.port)
            self.stack.sim_call("PATCH", "/_sim/config", {"latency_ms": self.rng.randint(20, 50)})


# --- the sender: a billing system's webhook delivery --------------------------------------


@dataclass
class Tally:
    """What the senders saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    deliveries: int = 0
    retried: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    swapped: int = 0
    answered: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1


class Pacer:
    """Spreads the first deliveries of all senders at `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.lock = threading.Lock()
        self.next_at = time.monotonic()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = self.next_at = max(self.next_at + self.interval, now)
        time.sleep(max(0.0, slot - now))


class Sender(threading.Thread):
    """Sends its services' events, each service in order, services interleaved."""

    def __init__(
        self,
        plans: list[ServicePlan],
        apps: list[Slot],
        tally: Tally,
        pacer: Pacer,
        rng: random.Random,
        swap_rate: float,
    ) -> None:
        super().__init__(daemon=True)
        self.plans, self.apps, self.tally, self.pacer = plans, apps, tally, pacer
        self.rng, self.swap_rate = rng, swap_rate
        self.http = requests.Session()

    def run(self) -> None:
        waiting = [p for p in self.plans if p.hooks]
        while waiting:
            plan = self.rng.choice(waiting)
            for hook in self.next_batch(plan):
                self.pacer.wait()
                self.deliver(hook)
            plan.last_sent_at = time.monotonic()
            if plan.sent == len(plan.hooks):
                waiting.remove(plan)
        self.http.close()

    def next_batch(self, plan: ServicePlan) -> list[Hook]:
        """The next event with its billing time; sometimes the next two, late one last."""
        now = datetime.now(UTC)
        first = plan.hooks[plan.sent]
        second = plan.hooks[plan.sent + 1] if plan.sent + 1 < len(plan.hooks) else None
        # Out of order only when the previous event is >= 3 s old: the late event's billing
        # time (now - 1.5 s) stays after it and a whole second before the next one, which
        # matters for Blesta (its billing time is capped at the signature's whole second).
        if (
            second is not None
            and Action.CREATE not in (first.action, second.action)
            and time.monotonic() - plan.last_sent_at >= 3
            and self.rng.random() < self.swap_rate
        ):
            first.payload = payload_for(first, now - timedelta(seconds=1.5))
            second.payload = payload_for(second, now)
            plan.sent += 2
            with self.tally.lock:
                self.tally.swapped += 1
            return [second, first]
        first.payload = payload_for(first, now)
        plan.sent += 1
        return [first]

    def deliver(self, hook: Hook) -> None:
        """Post until the bridge answers; 5xx, timeouts and refused connections are retried
        with the same webhook-id and body, as WHMCS and Blesta retry a delivery."""
        tries = 0
        while True:
            app = self.rng.choice(self.apps)
            body, headers = signed(hook.source, hook.payload, hook.webhook_id)
            with self.tally.lock:
                self.tally.deliveries += 1
            try:
                answer = self.http.post(
                    f"{app.url}/hooks/{hook.source}", data=body, headers=headers, timeout=(3, 40)
                )
            except requests.RequestException as exc:
                self.tally.add(self.tally.retried, type(exc).__name__)
            else:
                if answer.status_code < 500:
                    self.record(hook, answer)
                    return
                self.tally.add(self.tally.retried, f"HTTP {answer.status_code}")
            tries += 1
            time.sleep(min(5.0, 0.2 * 2**tries) * self.rng.uniform(0.5, 1.0))

    def record(self, hook: Hook, answer: requests.Response) -> None:
        data = answer.json() if "json" in answer.headers.get("content-type", "") else {}
        status = str(data.get("status") or data.get("error") or answer.status_code)
        key = f"{answer.status_code} {status}" + (" duplicate" if data.get("duplicate") else "")
        with self.tally.lock:
            self.tally.sent += 1
            self.tally.answers[key] += 1
            self.tally.answered[(hook.source, hook.webhook_id)] = status
            if answer.status_code >= 400:
                self.tally.refused.append(
                    f"{hook.source} {hook.webhook_id} {hook.action}: "
                    f"HTTP {answer.status_code} {answer.text[:300]}"
                )


# --- the ledger, read directly -----------------------------------------------------------


class Ledger:
    """Read-only SQL on the bridge's database, independent of the bridge's code."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def status_counts(self) -> Counter[str]:
        return Counter(dict(self.rows("SELECT status, COUNT(*) FROM events GROUP BY status")))

    def pending(self) -> tuple[int, int]:
        """Events not yet final, and services with a reconcile due or leased."""
        events = self.rows("SELECT COUNT(*) FROM events WHERE status IN ('received', 'queued')")
        services = self.rows(
            "SELECT COUNT(*) FROM services WHERE job_due_at IS NOT NULL OR lease_owner IS NOT NULL"
        )
        return events[0][0], services[0][0]

    def events(self) -> list[Any]:
        return self.rows(
            "SELECT id, source, webhook_id, service_ref, action, status, reason FROM events"
        )

    def service_story(self, source: str, ref: str) -> str:
        """The bridge's view of one service, for a mismatch report."""
        service = self.rows(
            "SELECT desired_state, product_id, addons, client_email, generation, "
            "applied_generation, job_due_at, last_reason FROM services "
            "WHERE source = :s AND service_ref = :r",
            s=source,
            r=ref,
        )
        events = self.rows(
            "SELECT id, action, status, reason, occurred_at FROM events "
            "WHERE source = :s AND service_ref = :r ORDER BY id",
            s=source,
            r=ref,
        )
        lines = [f"    bridge service: {tuple(service[0]) if service else None}"]
        lines += [f"    event {tuple(e)}" for e in events]
        return "\n".join(lines)

    def close(self) -> None:
        self.engine.dispose()


# --- the run -----------------------------------------------------------------------------


def progress(started: float, tally: Tally, ledger: Ledger, chaos: Chaos, note: str = "") -> None:
    """One progress line on stderr."""
    counts = ledger.status_counts()
    print(
        f"[{time.monotonic() - started:6.0f} s] sent {tally.sent} deliveries "
        f"{tally.deliveries} | applied {counts['applied']} queued {counts['queued']} "
        f"failed {counts['failed']} superseded {counts['superseded']} | kills "
        f"{dict(chaos.kills)} {note}".rstrip(),
        file=sys.stderr,
        flush=True,
    )


class Outage:
    """The one mail-server outage, and how long the bridge took to call it again after."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.ends_at: float | None = None  # simulator clock
        self.log_seq = 0

    def start(self, stack: Stack) -> None:
        """Take the mail server down now for `seconds`."""
        # The second half fails with JSON 500s, so 503s in the request log are the outage.
        stack.sim_call("PATCH", "/_sim/config", {"error_kind": "json_500"})
        self.log_seq = stack.sim_requests(10**12)["last_seq"]
        state = stack.sim_call("POST", "/_sim/faults", {"kind": "down", "seconds": self.seconds})
        self.ends_at = state["down_until"]

    def recovery_s(self, stack: Stack) -> float | None:
        """Seconds from the end of the outage to the first call the server answered."""
        if self.ends_at is None:
            return None
        entries = stack.sim_requests(self.log_seq)["entries"]
        answered = [
            e["time"]
            for e in entries
            if e["time"] >= self.ends_at and 0 < e["status"] < 500 and e["status"] != 429
        ]
        return min(answered) - self.ends_at if answered else None


def send_all(
    stack: Stack,
    args: argparse.Namespace,
    plans: list[ServicePlan],
    apps: list[Slot],
    chaos: Chaos,
    ledger: Ledger,
    started: float,
) -> tuple[Tally, Outage]:
    """Run the senders to the end; start the outage halfway through."""
    tally = Tally()
    outage = Outage(args.outage_s)
    pacer = Pacer(args.send_rate)
    senders = [
        Sender(
            plans[i :: args.senders],
            apps,
            tally,
            pacer,
            random.Random(args.seed + i),
            args.swap_rate,
        )
        for i in range(args.senders)
    ]
    for sender in senders:
        sender.start()
    while any(s.is_alive() for s in senders):
        line_at = time.monotonic() + PROGRESS_EVERY_S
        for sender in senders:
            sender.join(max(0.0, line_at - time.monotonic()))
        note = ""
        if args.outage_s and outage.ends_at is None and tally.sent >= args.events // 2:
            outage.start(stack)
            note = f"| mail server DOWN for {args.outage_s} s"
        progress(started, tally, ledger, chaos, note)
    return tally, outage


def drain(ledger: Ledger, timeout: float, started: float, tally: Tally, chaos: Chaos) -> bool:
    """Wait until no event is pending and no reconcile is due, twice in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    last_line = 0.0
    while time.monotonic() < deadline:
        events, services = ledger.pending()
        quiet = quiet + 1 if events == services == 0 else 0
        if quiet >= 2:
            return True
        if time.monotonic() - last_line >= PROGRESS_EVERY_S:
            progress(
                started,
                tally,
                ledger,
                chaos,
                f"| draining: {events} events pending, {services} services due",
            )
            last_line = time.monotonic()
        time.sleep(3)
    return False


def check_events(tally: Tally, ledger: Ledger) -> tuple[Counter[str], list[str]]:
    """Every answered webhook-id stored once, every event final; counts and problems."""
    problems = []
    stored: Counter[tuple[str, str]] = Counter()
    statuses: Counter[str] = Counter()
    for row in ledger.events():
        stored[(row.source, row.webhook_id)] += 1
        statuses[row.status] += 1
        where = f"event {row.id} ({row.source} {row.service_ref} {row.action} {row.webhook_id})"
        if row.status not in FINAL_STATUSES:
            problems.append(f"unaccounted: {where} is {row.status} ({row.reason})")
        elif row.status == "failed" and not row.reason:
            problems.append(f"unaccounted: {where} failed without a reason")
    for key in tally.answered:
        if stored[key] != 1:
            problems.append(f"lost: {key[0]} {key[1]} answered but stored {stored[key]} times")
    for key in stored.keys() - tally.answered.keys():
        problems.append(f"unexpected: {key[0]} {key[1]} stored but never answered")
    return statuses, problems


def check_accounts(stack: Stack, plans: list[ServicePlan], ledger: Ledger) -> list[str]:
    """Compare the simulator's DomainAdmins with the state computed from what was sent."""
    expected = expected_accounts(plans, stack.config())
    state = stack.sim_call("GET", "/_sim/state")
    actual = {a["username"]: a for a in state["accounts"] if a["perm_level"] == "DomainAdmin"}
    problems = []
    for plan in plans:
        name, want = plan.billing.username, expected.get(plan.billing.username)
        have = actual.get(name)
        diffs = []
        if want is None and have is not None:
            diffs.append("exists, but the service is terminated")
        elif want is not None and have is None:
            diffs.append("missing")
        elif want is not None and have is not None:
            diffs += [
                f"{k} {have.get(k)!r} != {v!r}"
                for k, v in want["fields"].items()
                if have.get(k) != v
            ]
            secret = want["password"]
            stored_hash = str(have.get("password_hash") or "").removeprefix("{SHA512-CRYPT}")
            if secret is not None and not sha512_crypt.verify(secret, stored_hash):
                diffs.append("password is not the last one sent")
        if diffs:
            story = ledger.service_story(plan.billing.source, str(plan.billing.number))
            problems.append(
                f"{plan.billing.source} {plan.billing.number} ({name}): {'; '.join(diffs)}\n{story}"
            )
    known = {p.billing.username for p in plans}
    problems += [f"unknown DomainAdmin {name}" for name in actual.keys() - known]
    return problems


def circuit_openings(stack: Stack) -> list[str]:
    """The bridge's "circuit open" warnings from every process's log, in order."""
    found = []
    for log in stack.dir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = re.search(r"circuit open for .* after (\d+) failures", line)
            if match and line.startswith("{"):
                entry = json.loads(line)
                found.append((entry["time"], int(match[1]), f"{entry['time']} {entry['message']}"))
    return [message for *_, message in sorted(found)]


def sim_counts(stack: Stack) -> Counter[int]:
    """Simulator API answers by HTTP status since start (the log's counters are never cut)."""
    counts: Counter[int] = Counter()
    for row in stack.sim_call("GET", f"/_sim/requests?since={10**12}")["counts"]:
        counts[int(row["status"])] += int(row["count"])
    return counts


@dataclass
class Findings:
    """What the end-of-run checks found."""

    statuses: Counter[str]
    event_problems: list[str]
    account_problems: list[str]
    sim: Counter[int]
    drained: bool
    drain_s: float
    recovery_s: float | None
    circuit: list[str]
    elapsed_s: float


def summarize(args: argparse.Namespace, tally: Tally, kills: Counter[str], f: Findings) -> int:
    """Print the counts and the problems; the exit status."""
    ok_calls = sum(n for status, n in f.sim.items() if 200 <= status < 300)
    recovery = "n/a" if f.recovery_s is None else f"{f.recovery_s:.0f} s"
    matched = args.services - sum(1 for p in f.account_problems if not p.startswith("unknown"))
    print(
        f"# soak: {args.events} events, {args.services} services, database "
        f"{args.database}, seed {args.seed}, outage {args.outage_s} s"
    )
    print(f"events sent (answered)     {tally.sent}")
    print(
        f"deliveries                 {tally.deliveries} (redeliveries "
        f"{tally.deliveries - tally.sent}: {dict(tally.retried)})"
    )
    print(f"sent out of order (pairs)  {tally.swapped}")
    print(f"answers                    {dict(sorted(tally.answers.items()))}")
    print(f"refused (4xx) answers      {len(tally.refused)}")
    print(f"ledger events by status    {dict(sorted(f.statuses.items()))}")
    print(f"kills                      {dict(kills)}")
    print(
        f"mail server answers        5xx injected: 502 {f.sim[502]}, 500 {f.sim[500]}, "
        f"503 (outage) {f.sim[503]}; 429 {f.sim[429]}; 2xx {ok_calls}"
    )
    print(f"first call after outage    {recovery} after it ended")
    # Shows how far the breaker's cooldown escalated.
    print(f"circuit opened             {len(f.circuit)} times")
    shown = f.circuit if len(f.circuit) <= 3 else [*f.circuit[:2], "...", f.circuit[-1]]
    for line in shown:
        print(f"  {line}")
    print(f"ledger drained             {'yes' if f.drained else 'NO'} in {f.drain_s:.0f} s")
    print(f"services matched           {matched} / {args.services}")
    problems = tally.refused + f.event_problems + f.account_problems
    for problem in problems[:40]:
        print(f"  PROBLEM {problem}")
    report(
        "soak lost or unaccounted events",
        len(f.event_problems),
        "events",
        ratio=None,
        versus="0 expected",
        sent=tally.sent,
    )
    report(
        "soak mismatched services",
        len(f.account_problems),
        "services",
        ratio=None,
        versus="0 expected",
        services=args.services,
    )
    report(
        "soak elapsed",
        f.elapsed_s,
        "s",
        ratio=None,
        versus="-",
        events=tally.sent,
        kills=sum(kills.values()),
    )
    return 1 if problems or not f.drained else 0


def database_url(choice: str) -> str | None:
    """None (a fresh SQLite file) or the bench PostgreSQL database."""
    if choice == "sqlite":
        return None
    url = postgres_url("bench_soak")
    if url is None:
        raise SystemExit("no PostgreSQL server answers; see BENCH_POSTGRES")
    return url


def start_slots(stack: Stack) -> list[Slot]:
    """Two app processes (each on its own port) and two workers."""
    ports = [free_port(), free_port()]
    slots = [Slot("app", start(stack, "app", port), port) for port in ports]
    return slots + [Slot("worker", start(stack, "worker")) for _ in range(2)]


def set_faults(stack: Stack, rng: random.Random) -> None:
    """Latency and 5% server errors from the start (HTML 502s until the outage)."""
    stack.sim_call(
        "PATCH",
        "/_sim/config",
        {
            "latency_ms": rng.randint(20, 50),
            "error_rate": 0.05,
            "error_kind": "html_502",
            "error_seed": rng.randrange(2**31),
        },
    )


def clear_faults(stack: Stack) -> None:
    stack.sim_call("DELETE", "/_sim/faults")
    stack.sim_call("PATCH", "/_sim/config", {"latency_ms": 0, "error_rate": 0.0})


def run(args: argparse.Namespace) -> int:
    """The whole soak; returns the exit status."""
    rng = random.Random(args.seed)
    plans = build_scenario(rng, args.events, args.services)
    started = time.monotonic()
    with Stack(
        database_url=database_url(args.database),
        rate=args.rate,
        sim_rate=20,
        inline_timeout_s=args.inline_timeout,
        retry_schedule_s=[1, 2, 5, 10, 20],
        lease_s=30,
        keep=args.keep,
    ) as stack:
        print(f"# stack in {stack.dir}", file=sys.stderr, flush=True)
        slots = start_slots(stack)
        ledger = Ledger(stack.database_url)
        set_faults(stack, rng)
        chaos = Chaos(stack, slots, args.chaos_every, random.Random(args.seed + 7919))
        chaos.start()
        tally, outage = send_all(
            stack, args, plans, [s for s in slots if s.kind == "app"], chaos, ledger, started
        )
        chaos.stop.set()
        chaos.join()
        clear_faults(stack)
        wait_until(lambda: all(s.proc.alive() for s in slots), 30, "every process to run")
        drain_started = time.monotonic()
        drained = drain(ledger, args.drain_timeout, started, tally, chaos)
        findings = Findings(
            *check_events(tally, ledger),
            account_problems=check_accounts(stack, plans, ledger),
            sim=sim_counts(stack),
            drained=drained,
            drain_s=time.monotonic() - drain_started,
            recovery_s=outage.recovery_s(stack),
            circuit=circuit_openings(stack),
            elapsed_s=time.monotonic() - started,
        )
        status = summarize(args, tally, chaos.kills, findings)
        ledger.close()
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n")[0])
    add: Callable[..., Any] = parser.add_argument
    add("--events", type=int, default=10_000, help="events in total (default 10000)")
    add("--services", type=int, default=1000, help="services, half per source (default 1000)")
    add(
        "--outage-s",
        type=int,
        default=120,
        help="mail-server outage length, 0 = none (default 120)",
    )
    add("--database", choices=["sqlite", "postgresql"], default="sqlite")
    add("--seed", type=int, default=1)
    add("--send-rate", type=float, default=8.0, help="first deliveries per second (default 8)")
    add("--senders", type=int, default=12, help="sender threads (default 12)")
    add("--rate", type=float, default=15.0, help="bridge rate limit per second (default 15)")
    add("--inline-timeout", type=float, default=2.0, help="intake.inline_timeout_s (default 2)")
    add("--chaos-every", type=float, default=30.0, help="mean seconds between kills (30)")
    add("--swap-rate", type=float, default=0.03, help="share of events sent late (0.03)")
    add("--drain-timeout", type=float, default=1200.0, help="seconds to drain (default 1200)")
    add("--keep", action="store_true", help="keep the stack folder (logs, SQLite file)")
    args = parser.parse_args(argv)
    if args.events < args.services:
        parser.error("--events must be at least --services (one create each)")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
