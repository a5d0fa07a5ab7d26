"""Live-server fixtures: one simulator per session on a real socket, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from nmsim.server import ServerHandle, start

MASTER = ("admin", "Sim-Master-Passw0rd")
PASSWORD = "Str0ngPassword"

# Two customers (DomainAdmins) with one verified domain and one mailbox each, plus a spare
# verified domain nobody administers. Seeded objects are owned by the DomainAdmin that
# administers their domain.
WORLD: dict[str, Any] = {
    "domains": [
        {"domain": "alpha.example"},
        {"domain": "beta.example"},
        {"domain": "free.example"},
    ],
    "accounts": [
        {
            "username": "reseller-a",
            "perm_level": "DomainAdmin",
            "password": PASSWORD,
            "domains": "alpha.example",
            "quota_domains": 3,
            "quota_domainaliases": 2,
            "quota_aliases": 3,
            "quota_mailboxes": 3,
            "storagequota_total": 1000,
        },
        {
            "username": "reseller-b",
            "perm_level": "DomainAdmin",
            "password": PASSWORD,
            "domains": "beta.example",
            "quota_domains": 3,
            "quota_domainaliases": 2,
            "quota_aliases": 3,
            "quota_mailboxes": 3,
            "storagequota_total": 1000,
        },
        {
            "username": "ann@alpha.example",
            "perm_level": "MailUser",
            "password": PASSWORD,
            "storagequota_total": 500,
            "storagequota_used": 403,
        },
        {
            "username": "bob@beta.example",
            "perm_level": "MailUser",
            "password": PASSWORD,
            "storagequota_total": 500,
            "storagequota_used": 389,
        },
    ],
}


class Client(requests.Session):
    """A requests session bound to the simulator's base URL."""

    def __init__(self, base: str, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.base = base
        self.auth = auth

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> Any:
        """Send a request to a path relative to the simulator."""
        path = url.decode() if isinstance(url, bytes) else url
        return super().request(method, self.base + path, *args, **kwargs)


class Nms:
    """Test helper around one running simulator."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ctl = Client(url)
        self.anon = Client(url)
        self._clients: list[Client] = [self.ctl, self.anon]

    def login(self, username: str, password: str = PASSWORD) -> Client:
        """Log in through POST /api/v1/auth/ and return an authenticated client."""
        resp = self.anon.post("/api/v1/auth/", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return self.as_token(username, resp.json()["auth"]["auth_token"])

    def as_token(self, username: str, token: str) -> Client:
        """Return a client sending Basic username:token."""
        client = Client(self.url, (username, token))
        self._clients.append(client)
        return client

    def as_user(self, username: str) -> Client:
        """Return a client for a user, with a token from the /_sim/tokens shortcut."""
        resp = self.ctl.post("/_sim/tokens", json={"username": username})
        assert resp.status_code == 200, resp.text
        return self.as_token(username, resp.json()["auth_token"])

    def master(self) -> Client:
        """Return a client logged in as the MasterAdmin."""
        return self.login(*MASTER)

    def seed(self, data: dict[str, Any]) -> None:
        """Seed the simulator (asserting success)."""
        resp = self.ctl.post("/_sim/seed", json=data)
        assert resp.status_code == 200, resp.text

    def config(self, **changes: Any) -> None:
        """Change runtime config (asserting success)."""
        resp = self.ctl.patch("/_sim/config", json=changes)
        assert resp.status_code == 200, resp.text

    def account(self, username: str) -> dict[str, Any]:
        """Read one account from the state dump."""
        accounts = self.ctl.get("/_sim/state").json()["accounts"]
        return next(a for a in accounts if a["username"] == username)

    def close(self) -> None:
        """Close every session."""
        for client in self._clients:
            client.close()


@pytest.fixture(scope="session")
def nms_server() -> Iterator[ServerHandle]:
    """One simulator for the session; the rate limit is off unless a test turns it on."""
    handle = start(rate_limit=0)
    yield handle
    handle.stop()


@pytest.fixture
def nms(nms_server: ServerHandle) -> Iterator[Nms]:
    """The simulator, reset to its startup state."""
    helper = Nms(nms_server.url)
    assert helper.ctl.post("/_sim/reset").status_code == 200
    yield helper
    helper.close()


@pytest.fixture
def world(nms: Nms) -> Nms:
    """The simulator seeded with WORLD."""
    nms.seed(WORLD)
    return nms
