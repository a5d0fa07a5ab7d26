"""Engine fixtures: the bridge wired to a live NMS simulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from flask import Flask

from bridge.db import utcnow
from bridge.provisioning.jobs import run_once
from bridge.provisioning.outcome import Outcome
from bridge.web import runtime
from nmsim.server import ServerHandle, start

MASTER_PASSWORD = "Sim-Master-Passw0rd"


class Sim:
    """The simulator as the tests see it: control endpoints and the request log."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def ctl(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}/_sim/{path}", timeout=10, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def reset(self) -> None:
        self.ctl("POST", "reset")
        self.ctl("PATCH", "config", json={"rate_limit": 0})

    def seed(self, data: dict[str, Any]) -> None:
        self.ctl("POST", "seed", json=data)

    def fault(self, **spec: Any) -> None:
        self.ctl("POST", "faults", json=spec)

    def clear_faults(self) -> None:
        self.ctl("DELETE", "faults")

    def account(self, username: str) -> dict[str, Any] | None:
        accounts = self.ctl("GET", "state")["accounts"]
        return next((a for a in accounts if a["username"] == username), None)

    def requests(self) -> list[dict[str, Any]]:
        return self.ctl("GET", "requests")["entries"]

    def clear_log(self) -> None:
        self.ctl("DELETE", "requests")

    def writes(self) -> list[dict[str, Any]]:
        """Logged calls that could change something (not GETs, not logins)."""
        return [e for e in self.requests() if e["method"] != "GET" and e["path"] != "/api/v1/auth/"]

    def logins(self) -> int:
        return sum(1 for e in self.requests() if e["path"] == "/api/v1/auth/")


@pytest.fixture(scope="session")
def sim_server() -> Iterator[ServerHandle]:
    handle = start(rate_limit=0)
    yield handle
    handle.stop()


@pytest.fixture
def sim(sim_server: ServerHandle) -> Iterator[Sim]:
    helper = Sim(sim_server.url)
    helper.reset()
    yield helper
    helper.http.close()


@pytest.fixture
def config_tree(config_tree: dict[str, Any], sim: Sim) -> dict[str, Any]:
    """The base test config, pointed at the simulator, with inline apply on."""
    config_tree["mailserver"].update(base_url=sim.url, rate_limit_per_s=15)
    config_tree["intake"]["inline_timeout_s"] = 10
    return config_tree


@pytest.fixture
def work(app: Flask):  # type: ignore[no-untyped-def]
    """Run the worker loop until nothing is due at `now`; return the outcomes."""

    def drain(now: datetime | None = None, limit: int = 100) -> list[Outcome]:
        outcomes = []
        for _ in range(limit):
            outcome = run_once(runtime(app), now=now or utcnow())
            if outcome is None:
                return outcomes
            outcomes.append(outcome)
        raise AssertionError(f"still work due after {limit} reconciles")

    return drain


def give_domain(sim: Sim, owner: str, domain: str, mailboxes: list[tuple[str, int, int]]) -> None:
    """Put a verified domain with mailboxes (local part, storage MB, enabled) under `owner`,
    the documented way: add it to the DomainAdmin's domains, then transfer ownership."""
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    api = requests.Session()
    api.auth = ("admin", token)
    base = f"{sim.url}/api/v1"
    assert api.post(f"{base}/domains/", json={"domain": domain}, timeout=10).ok
    sim.ctl("POST", "verify", json={"domain": domain})
    current = sim.account(owner)["domains"]
    domains = ",".join(d for d in (current, domain) if d)
    assert api.patch(f"{base}/accounts/{owner}/", json={"domains": domains}, timeout=10).ok
    sim.seed(
        {
            "accounts": [
                {
                    "username": f"{local}@{domain}",
                    "perm_level": "MailUser",
                    "domain": domain,
                    "storagequota_total": mb,
                    "enabled": enabled,
                }
                for local, mb, enabled in mailboxes
            ]
        }
    )
    response = api.post(f"{base}/accounts/cascade/ownership/domainadmin/{owner}/", timeout=10)
    assert response.status_code == 204, response.text
    api.close()
    sim.clear_log()
