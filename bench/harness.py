"""What every bench script needs: a simulator, a database, a config file, and the bridge's
own processes (gunicorn and `bridge worker`) started as an operator would start them.

Nothing here is imported by the bridge or by the tests. Scripts use it like this:

    with Stack(database_url=None, rate=10) as stack:   # None = a fresh SQLite file
        web = stack.start_web()
        worker = stack.start_worker()
        stack.post(web.url, "whmcs", whmcs_envelope(Action.CREATE, 1))
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import requests
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRETS = {
    "whmcs": "whsec_YmVuY2gtd2htY3Mtc2VjcmV0LTMyLWJ5dGVzLWxvbmch",
    "blesta": "whsec_YmVuY2gtYmxlc3RhLXNlY3JldC0zMi1ieXRlcy1sb25n",
}
SIM_MASTER = ("admin", "Sim-Master-Passw0rd")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; raise after `timeout` seconds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(every)


def listening(port: int) -> bool:
    """Tell whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of a process's resident memory (VmHWM), in MB; 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (e.g. a gunicorn master's workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def signed(source: str, payload: Any, webhook_id: str | None = None) -> tuple[bytes, dict]:
    """Body and Standard Webhooks headers for one delivery."""
    from bridge.signature import sign

    body = json.dumps(payload).encode()
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    return body, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(SECRETS[source], msg_id, stamp, body),
    }


def postgres_url(name: str) -> str | None:
    """URL of the PostgreSQL database a bench uses, or None when no server answers, so
    callers can skip that leg. BENCH_DATABASE_URL names one database for every bench (each
    leg empties its public schema first: give it a database of its own); otherwise database
    `name` on the server at BENCH_POSTGRES (default: the local one), created when missing."""
    url = os.environ.get("BENCH_DATABASE_URL")
    server = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
    admin = create_engine(
        url or f"{server}/postgres", isolation_level="AUTOCOMMIT", pool_pre_ping=True
    )
    try:
        with admin.connect() as conn:
            if url:
                return url
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any connection failure means: no PostgreSQL leg
        print(
            f"# PostgreSQL at {url or server} does not answer ({type(exc).__name__}); leg skipped"
        )
        return None
    finally:
        admin.dispose()
    return f"{server}/{name}"


def report(
    name: str, value: float, unit: str, *, ratio: float | None, versus: str, **details: Any
) -> None:
    """Print the one result line of a measurement and append it to $BENCH_RESULTS (JSON
    lines) when set. `ratio` is value / reference, measured in the same run."""
    extra = "  ".join(f"{k}={v}" for k, v in details.items())
    shown = "n/a" if ratio is None else f"{ratio:.2f}"
    print(
        f"{name:<34} {value:>10.2f} {unit:<10} ratio {shown:>6} vs {versus}  {extra}".rstrip(),
        flush=True,
    )
    target = os.environ.get("BENCH_RESULTS")
    if target:
        line = {
            "name": name,
            "value": value,
            "unit": unit,
            "ratio": ratio,
            "versus": versus,
            **details,
        }
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def reset_database(url: str) -> None:
    """Empty a PostgreSQL database's schema (public, or the one `options=-csearch_path=X`
    names); SQLite files are simply new."""
    if not url.startswith("postgresql"):
        return
    options = make_url(url).query.get("options", "")
    found = re.search(r"search_path=(\w+)", options if isinstance(options, str) else "")
    schema = found.group(1) if found else "public"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()


class Proc:
    """One child process with its output in a log file; `peak_rss_mb` includes children."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        self.peak_mb: dict[int, float] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample_rss(self) -> None:
        """Remember the peak RSS of this process and each of its children seen so far."""
        for pid in [self.pid, *children(self.pid)]:
            self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), peak_rss_mb(pid))

    def child_peak_mb(self) -> float:
        """The largest peak RSS among the children (gunicorn workers), else the process's."""
        kids = [mb for pid, mb in self.peak_mb.items() if pid != self.pid]
        return max(kids or [self.peak_mb.get(self.pid, 0.0)])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the process and wait for it; SIGKILL if it does not leave in time."""
        if self.alive():
            self.sample_rss()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process, then its children (a crash, not a shutdown): the parent
        first, so a gunicorn master cannot start a replacement worker meanwhile."""
        kids = children(self.pid)
        self.stop(signal.SIGKILL)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Stack:
    """A simulator, a fresh database and a config file in a temporary folder; start the
    bridge's processes with `start_web()` and `start_worker()`. All stop on exit."""

    def __init__(
        self,
        *,
        database_url: str | None = None,
        rate: float = 10,
        sim_rate: float = 20,
        inline_timeout_s: float = 0,
        retry_schedule_s: list[float] | None = None,
        lease_s: int = 120,
        log_level: str = "WARNING",
        keep: bool = False,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        self.database_url = database_url or f"sqlite:///{self.dir / 'bridge.db'}"
        self.rate = rate
        self.sim_rate = sim_rate
        self.inline_timeout_s = inline_timeout_s
        self.retry_schedule_s = retry_schedule_s or [5, 300, 1800, 7200]
        self.lease_s = lease_s
        self.log_level = log_level
        self.keep = keep
        self.procs: list[Proc] = []
        self.sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.config_path = self.dir / "bridge.yaml"
        self.http = requests.Session()

    # --- set-up -------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        reset_database(self.database_url)
        self.config_path.write_text(yaml.safe_dump(self.config()), encoding="utf-8")
        self.sim = self.spawn(
            "nmsim",
            [
                sys.executable,
                "-m",
                "nmsim",
                "--port",
                str(self.sim_port),
                "--rate-limit",
                str(self.sim_rate),
            ],
        )
        wait_until(lambda: listening(self.sim_port), 15, "the simulator to listen")
        self.sim_call("PATCH", "/_sim/config", {"request_log_max": 200_000})
        subprocess.run(
            [str(BIN / "bridge"), "--config", str(self.config_path), "db", "upgrade"],
            check=True,
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.http.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def config(self) -> dict[str, Any]:
        """The bridge config the processes run on."""
        starter = {
            "domains": 1,
            "domain_aliases": 1,
            "aliases": 10,
            "mailboxes": 5,
            "storage_mb": 5120,
        }
        business = {
            "domains": 3,
            "domain_aliases": 3,
            "aliases": 50,
            "mailboxes": 25,
            "storage_mb": 51200,
        }
        return {
            "database_url": self.database_url,
            "mailserver": {
                "base_url": self.sim_url,
                "username": SIM_MASTER[0],
                "password": SIM_MASTER[1],
                "rate_limit_per_s": self.rate,
                "unlimited_value": 1000000,
                "read_timeout_s": 10,
            },
            "sources": {
                "whmcs": {"kind": "whmcs", "secrets": [SECRETS["whmcs"]]},
                "blesta": {"kind": "blesta", "secrets": [SECRETS["blesta"]]},
            },
            "tiers": {"starter": starter, "business": business},
            "products": {
                "whmcs": {1: "starter", 2: "business"},
                "blesta": {1: "starter", 2: "business"},
            },
            "addons": {"whmcs": {"extra_mailboxes": {"mailboxes": 1, "storage_mb": 1024}}},
            "intake": {"inline_timeout_s": self.inline_timeout_s},
            "retry": {"schedule_s": self.retry_schedule_s, "lease_s": self.lease_s},
            "termination": {"grace_days": 0},
            "admin": {"secret_key": "bench-secret-key"},
            "logging": {"level": self.log_level, "json": True},
        }

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "BRIDGE_CONFIG": str(self.config_path), **extra}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        taken = sum(1 for p in self.procs if p.name.split("-")[0] == name)
        proc = Proc(f"{name}-{taken}" if taken else name, argv, self.dir, self.env(**env))
        self.procs.append(proc)
        return proc

    # --- the bridge's processes ---------------------------------------------------------
    def start_web(
        self,
        port: int | None = None,
        workers: int = 2,
        threads: int = 8,
        *,
        entry: str = "wsgi:app",
        nice: int = 0,
    ) -> Proc:
        """gunicorn with the project's gunicorn.conf.py (access log on, to this process's
        log file) serving `entry` (one of wsgi.py's apps), at CPU priority `nice` as a
        systemd `Nice=` would set it; waits until it answers /healthz."""
        port = port or free_port()
        proc = self.spawn(
            "web",
            [
                *(["nice", "-n", str(nice)] if nice else []),
                str(BIN / "gunicorn"),
                "--config",
                str(ROOT / "gunicorn.conf.py"),
                entry,
            ],
            BRIDGE_BIND=f"127.0.0.1:{port}",
            BRIDGE_WORKERS=str(workers),
            BRIDGE_THREADS=str(threads),
        )
        proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        wait_until(lambda: self._healthy(proc.url), 30, f"gunicorn on {port}")  # type: ignore[attr-defined]
        return proc

    def start_staff(self) -> Proc:
        """The staff face as deploy/mailbridge-staff.service runs it: `wsgi:staff`, 1 worker
        x 4 threads (BRIDGE_WORKERS, BRIDGE_THREADS), at Nice=10."""
        return self.start_web(workers=1, threads=4, entry="wsgi:staff", nice=10)

    def start_worker(self) -> Proc:
        return self.spawn("worker", [str(BIN / "bridge"), "worker"])

    def _healthy(self, url: str) -> bool:
        try:
            return self.http.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def sample_rss(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.sample_rss()

    # --- talking to things --------------------------------------------------------------
    def post(self, url: str, source: str, payload: Any, webhook_id: str | None = None) -> Any:
        """Deliver one signed event to a bridge at `url`; return (status, JSON answer)."""
        body, headers = signed(source, payload, webhook_id)
        answer = self.http.post(f"{url}/hooks/{source}", data=body, headers=headers, timeout=60)
        return answer.status_code, answer.json()

    def sim_call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.sim_url}{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def sim_requests(self, since: int = 0) -> dict[str, Any]:
        """The simulator's request log after `since` and its counters."""
        return self.sim_call("GET", f"/_sim/requests?since={since}")
