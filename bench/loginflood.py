"""Login-flood benchmark: the webhook intake's p50 latency idle, then while 48 threads post
wrong passwords to the console's login form, against the same intake p50 idle (the target:
within 2x), and while the same 48 threads post to a cheap endpoint (the control: what any
flood of requests costs on this machine, login or not).

    PYTHONPATH=. .venv/bin/python -m bench.loginflood [--requests 1500] [--threads 48]
        [--layouts one,split]

Two layouts, each measured from a fresh stack:
- `one`: one gunicorn serves everything (`wsgi:app`, what `make run` starts; 2 workers x 8
  threads); the flood and the webhooks share its workers;
- `split`: the deployed layout (deploy/): webhooks on `wsgi:hooks` (2 workers x 8 threads),
  the console on `wsgi:staff` (1 worker x 4 threads, `Nice=10` as mailbridge-staff.service
  sets it); the floods go to the staff server, the webhooks to the other.
Staff passwords use the production scrypt cost. The bridge sits behind one trusted proxy
(`admin.trusted_proxies: 1`), so the flood can come from many client addresses
(X-Forwarded-For): the harder case, where the per-address limit never triggers and only the
bound on concurrent hashes protects the webhooks. `--one-address` floods from a single
address instead. Each flood thread logs in with its own session and CSRF token (as a script
would), then posts again and again; every other try names the real staff account.

Accuracy: the flood generator (48 threads in 2 processes, at normal priority) and the intake
generator run on the same machine as the bridge and take CPU from it; the control flood shows
how much of the slowdown any 48-thread flood causes here. The load average is printed with
each leg.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.harness import BIN, ROOT, Stack, postgres_url, report
from bench.load import LoadResult, kind_requests, run_load

WORKERS, THREADS = 2, 8
LAYOUTS = ("one", "split")
STAFF = ("flood-target@example.com", "The-Real-Passw0rd-42")
FORK = multiprocessing.get_context("fork")


class FloodStack(Stack):
    """The bench stack behind one trusted proxy (client addresses from X-Forwarded-For)."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["admin"]["trusted_proxies"] = 1
        return config


@dataclass(frozen=True)
class FloodResult:
    """How the flood's requests were answered, by HTTP status."""

    answers: Counter[int]
    seconds: float

    @property
    def per_s(self) -> float:
        return sum(self.answers.values()) / self.seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loginflood",
        description="Intake p50 idle vs under a login flood (and under a control flood).",
    )
    parser.add_argument("--requests", type=int, default=1500, help="timed intake requests per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed first (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="intake requests in flight")
    parser.add_argument("--threads", type=int, default=48, help="flood threads (%(default)s)")
    parser.add_argument("--one-address", action="store_true", help="flood from one address")
    parser.add_argument("--no-control", action="store_true", help="skip the control flood")
    parser.add_argument(
        "--legs", default="sqlite,postgresql", help="sqlite,postgresql (%(default)s)"
    )
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help="one,split (%(default)s): see above"
    )
    args = parser.parse_args(argv)
    if unknown := set(args.legs.split(",")) - {"sqlite", "postgresql"}:
        parser.error(f"unknown leg(s): {', '.join(sorted(unknown))}")
    if unknown := set(args.layouts.split(",")) - set(LAYOUTS):
        parser.error(f"unknown layout(s): {', '.join(sorted(unknown))}")
    if min(args.requests, args.warmup, args.concurrency, args.threads) < 1:
        parser.error("--requests, --warmup, --concurrency and --threads must be positive")
    return args


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ---- the flood -----------------------------------------------------------------------------


def _login_session(conn: http.client.HTTPConnection) -> tuple[str, str]:
    """GET the login page: the session cookie and the form's CSRF token."""
    conn.request("GET", "/admin/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return cookie, token


def _flood_thread(url: str, kind: str, one_address: bool, stop: Event, seen: Counter[int]) -> None:
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
    rng = random.Random()
    cookie, token = _login_session(conn) if kind == "login" else ("", "")
    n = 0
    while not stop.is_set():
        n += 1
        address = (
            "198.51.100.7"
            if one_address
            else f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        )
        headers = {"X-Forwarded-For": address}
        if kind == "login":
            email = STAFF[0] if n % 2 else f"guess{rng.randrange(10**9)}@example.com"
            body = urlencode({"email": email, "password": "Wrong-Passw0rd-99", "csrf_token": token})
            headers |= {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
            method, path = "POST", "/admin/login"
        else:
            body, method, path = None, "GET", "/healthz"
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            response.read()
            seen[response.status] += 1
        except (OSError, http.client.HTTPException):
            conn.close()
            seen[0] += 1
    conn.close()


def _flood_process(
    url: str, kind: str, threads: int, one_address: bool, stop: Event, out: Queue[Counter[int]]
) -> None:
    counters = [Counter[int]() for _ in range(threads)]
    workers = [
        threading.Thread(target=_flood_thread, args=(url, kind, one_address, stop, c))
        for c in counters
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(sum(counters, Counter()))


class Flood:
    """`threads` clients (in 2 processes) posting until stopped."""

    def __init__(self, url: str, kind: str, threads: int, one_address: bool) -> None:
        self.stop_event = FORK.Event()
        self.out: Queue[Counter[int]] = FORK.Queue()
        shares = [threads // 2 + threads % 2, threads // 2]
        self.procs = [
            FORK.Process(
                target=_flood_process,
                args=(url, kind, n, one_address, self.stop_event, self.out),
                daemon=True,
            )
            for n in shares
            if n
        ]

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        for proc in self.procs:
            proc.start()
        time.sleep(2.0)  # every thread connected, logged in to its session and posting
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        counts: Counter[int] = Counter()
        for _ in self.procs:
            counts += self.out.get(timeout=120)
        for proc in self.procs:
            proc.join(timeout=30)
        self.result = FloodResult(counts, time.monotonic() - self.started)


# ---- one leg -------------------------------------------------------------------------------


def add_staff(stack: Stack) -> None:
    """The account half of the flood's tries name (production scrypt cost)."""
    subprocess.run(
        [str(BIN / "bridge"), "staff", "add", STAFF[0], "--role", "operator", "--password-stdin"],
        input=STAFF[1] + "\n",
        text=True,
        check=True,
        capture_output=True,
        cwd=ROOT,
        env=stack.env(),
    )


def intake(url: str, args: argparse.Namespace, first_service: int) -> LoadResult:
    """Warm-up, then the timed intake requests (fresh signatures); every answer must be 2xx."""
    sent = kind_requests("mix", args.warmup + args.requests, first_service=first_service)
    run_load(url, sent[: args.warmup], concurrency=args.concurrency, processes=1)
    result = run_load(url, sent[args.warmup :], concurrency=args.concurrency, processes=1)
    if result.errors:
        raise RuntimeError(f"intake: {result.errors} answers were not 2xx: {result.first_error}")
    return result


def run_leg(name: str, layout: str, database_url: str | None, args: argparse.Namespace) -> None:
    """One database and layout: intake idle, under the login flood, under the control flood."""
    label = name if layout == "one" else f"{name}.{layout}"
    with FloodStack(database_url=database_url, inline_timeout_s=0) as stack:
        add_staff(stack)
        if layout == "one":
            web = stack.start_web(workers=WORKERS, threads=THREADS)
            hooks_url = staff_url = web.url  # type: ignore[attr-defined]
        else:
            web = stack.start_web(workers=WORKERS, threads=THREADS, entry="wsgi:hooks")
            staff = stack.start_staff()
            hooks_url, staff_url = web.url, staff.url  # type: ignore[attr-defined]
        hooks = f"{hooks_url}/hooks/whmcs"
        idle = intake(hooks, args, first_service=10_000)
        p50_idle = idle.percentile_ms(50)
        progress(f"{label}: idle intake p50 {p50_idle:.1f} ms, p99 {idle.percentile_ms(99):.1f} ms")

        with Flood(staff_url, "login", args.threads, args.one_address) as flood:
            flooded = intake(hooks, args, first_service=20_000)
        counts = flood.result.answers
        progress(
            f"{label}: under the login flood intake p50 {flooded.percentile_ms(50):.1f} ms; "
            f"flood {flood.result.per_s:.0f} answers/s: {dict(sorted(counts.items()))}"
        )
        common = {
            "layout": layout,
            "threads": args.threads,
            "requests": args.requests,
            "load": load_average(),
        }
        report(
            f"loginflood.{label}.intake_p50_idle_ms",
            p50_idle,
            "ms",
            ratio=None,
            versus="-",
            p99_ms=round(idle.percentile_ms(99), 2),
            **common,
        )
        report(
            f"loginflood.{label}.intake_p50_login_flood_ms",
            flooded.percentile_ms(50),
            "ms",
            ratio=flooded.percentile_ms(50) / p50_idle,
            versus="intake p50 idle (target <= 2)",
            p99_ms=round(flooded.percentile_ms(99), 2),
            flood_per_s=round(flood.result.per_s),
            hashed_401=counts.get(401, 0),
            busy_503=counts.get(503, 0),
            throttled_429=counts.get(429, 0),
            other=sum(n for code, n in counts.items() if code not in (401, 429, 503)),
            spread=not args.one_address,
            **common,
        )
        if args.no_control:
            return
        with Flood(staff_url, "control", args.threads, args.one_address) as control:
            controlled = intake(hooks, args, first_service=30_000)
        progress(
            f"{label}: under the control flood intake p50 {controlled.percentile_ms(50):.1f} ms; "
            f"flood {control.result.per_s:.0f} answers/s"
        )
        report(
            f"loginflood.{label}.intake_p50_control_flood_ms",
            controlled.percentile_ms(50),
            "ms",
            ratio=controlled.percentile_ms(50) / p50_idle,
            versus="intake p50 idle",
            p99_ms=round(controlled.percentile_ms(99), 2),
            flood_per_s=round(control.result.per_s),
            flood="GET /healthz",
            **common,
        )


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.legs.split(","):
        url = None if name == "sqlite" else postgres_url("bench_loginflood")
        if name == "postgresql" and url is None:
            continue
        for layout in args.layouts.split(","):
            progress(
                f"{name} leg, layout {layout}: {args.threads} flood threads; "
                f"load average {load_average()}"
            )
            run_leg(name, layout, url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
