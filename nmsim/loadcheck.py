"""Throughput check: `python -m nmsim.loadcheck [--url URL] [--threads N] [--seconds S]`.

Without --url it starts `python -m nmsim --port 0 --rate-limit 0` as a subprocess, so client
and server do not share a GIL. Each thread reuses one requests.Session and sends authenticated
API calls (a mix of account list, single account get and quota stats) for the given time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import requests

SEED = {
    "domains": [{"domain": f"load{i}.example"} for i in range(5)],
    "accounts": [
        {
            "username": f"da{i}",
            "perm_level": "DomainAdmin",
            "domains": f"load{i}.example",
            "quota_mailboxes": 10,
            "storagequota_total": 10000,
        }
        for i in range(5)
    ]
    + [
        {
            "username": f"user{j}@load{i}.example",
            "perm_level": "MailUser",
            "storagequota_total": 500,
            "storagequota_used": 100 + j,
        }
        for i in range(5)
        for j in range(5)
    ],
}

PATHS = ("/api/v1/accounts/?limit=10", "/api/v1/accounts/da1/", "/api/v1/stats/quota/?limit=10")


def run(url: str, master: str, threads: int, seconds: float) -> dict[str, float]:
    """Hammer a running simulator and return throughput and latency figures."""
    control = requests.Session()
    control.patch(f"{url}/_sim/config", json={"rate_limit": 0}).raise_for_status()
    control.post(f"{url}/_sim/seed", json=SEED).raise_for_status()
    user, password = master.split(":", 1)
    login = control.post(f"{url}/api/v1/auth/", json={"username": user, "password": password})
    token = login.json()["auth"]["auth_token"]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        session = requests.Session()
        session.auth = (user, token)
        mine: list[float] = []
        bad = 0
        i = n
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            resp = session.get(url + PATHS[i % len(PATHS)], timeout=10)
            mine.append(time.perf_counter() - t0)
            bad += resp.status_code != 200
            i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count,
        "errors": errors[0],
        "seconds": round(elapsed, 2),
        "req_per_s": round(count / elapsed, 1),
        "p50_ms": round(latencies[count // 2] * 1000, 2) if count else 0.0,
        "p99_ms": round(latencies[int(count * 0.99)] * 1000, 2) if count else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start a simulator if needed, run the check and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m nmsim.loadcheck", description=__doc__)
    parser.add_argument("--url", help="a running simulator with /_sim/ hooks (default: start one)")
    parser.add_argument("--master", default="admin:Sim-Master-Passw0rd", metavar="USER:PASSWORD")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nmsim",
                "--port",
                "0",
                "--rate-limit",
                "0",
                "--master",
                args.master,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
    try:
        result = run(url, args.master, args.threads, args.seconds)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
