"""NMS API v1 client: one method per call the bridge makes, typed results, failures by cause.

What the bridge relies on, documented or assumed: docs/nms-api.md.
Token: one password login per token lifetime for every process sharing the database (the
token lives in the gate row, see ratelimit.py), reused until it is due for renewal or a 401
says otherwise (then one re-login, by one process, and one retry). Every call passes the
shared RateLimiter first. Redirects are never followed, so the credentials go only to
`mailserver.base_url`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from bridge import metrics
from bridge.config import MailServerSettings
from bridge.mailserver.errors import PermanentError, TransientError, truncate
from bridge.mailserver.ratelimit import RateLimiter, SharedToken, when

log = logging.getLogger(__name__)

#: Bundle field -> NMS field of the limit -> NMS field of the usage.
QUOTA_FIELDS = {
    "domains": ("quota_domains", "quota_domains_used"),
    "domain_aliases": ("quota_domainaliases", "quota_domainaliases_used"),
    "aliases": ("quota_aliases", "quota_aliases_used"),
    "mailboxes": ("quota_mailboxes", "quota_mailboxes_used"),
    "storage_mb": ("storagequota_total", "storagequota_used"),
}
PAGE = 50
TOKEN_MARGIN_S = 300
#: How long a ban lasts when the server does not say (the NMS documents "an hour or more").
DEFAULT_BAN_S = 3600.0
#: How often a process waiting for another's login looks for the new token.
LOGIN_POLL_S = 0.1
#: `error` codes of a 403 or 429 that mean the server banned this client address.
BAN_CODES = ("ip_banned", "banned", "ip_blocked", "blocked")


@dataclass(frozen=True)
class DomainAdmin:
    """A DomainAdmin as the mail server reports it."""

    username: str
    enabled: bool
    recovery_email: str
    domains: tuple[str, ...]
    limits: dict[str, int]
    used: dict[str, int]
    password_hash: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DomainAdmin:
        """Parse one entry of GET /api/v1/accounts/."""
        return cls(
            username=data["username"],
            enabled=int(data.get("enabled", 0)) == 1,
            recovery_email=data.get("recovery_email") or "",
            domains=split_list(data.get("domains")),
            limits={b: int(data.get(limit) or 0) for b, (limit, _) in QUOTA_FIELDS.items()},
            # A usage field the server leaves out is unknown, not 0 (reconcile: usage_unknown).
            used={
                b: int(data[used])
                for b, (_, used) in QUOTA_FIELDS.items()
                if data.get(used) is not None
            },
            password_hash=data.get("password_hash"),
        )


@dataclass(frozen=True)
class AdminUsage:
    """A DomainAdmin's limits and usage as reported; None where the server left a field out.

    From an account row (`quota_*`, `*_used`) or a `stats/quota` row (storage only).
    """

    username: str
    limits: dict[str, int | None]
    used: dict[str, int | None]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> AdminUsage:
        """Parse an account row or a stats/quota row; absent or non-numeric fields are None."""
        return cls(
            username=str(data.get("username") or ""),
            limits={b: _count(data.get(limit)) for b, (limit, _) in QUOTA_FIELDS.items()},
            used={b: _count(data.get(used)) for b, (_, used) in QUOTA_FIELDS.items()},
        )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class MailUser:
    """A mailbox account."""

    username: str
    domain: str
    enabled: bool


@dataclass(frozen=True)
class Account:
    """Any account, when only its level matters (username taken by a MailUser, say)."""

    username: str
    perm_level: str
    raw: dict[str, Any] = field(repr=False)


def split_list(value: Any) -> tuple[str, ...]:
    """NMS list fields are one comma-separated string (docs/nms-api.md#list-fields)."""
    if not value:
        return ()
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def join_list(values: tuple[str, ...] | list[str]) -> str:
    """The inverse of split_list."""
    return ",".join(values)


def segment(name: str) -> str:
    """A username as one path segment: `/`, `?`, `#`, `%` and the rest percent-encoded."""
    return quote(name, safe="")


class TokenCache:
    """This process's copy of the fleet's token, shared by its threads; never logged."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: str | None = None
        self.valid_to = 0.0
        self.renew_at = 0.0
        #: The last token the server refused: never taken from the database again.
        self.rejected: str | None = None
        #: Logins this process made.
        self.logins = 0


class MailServer:
    """Process-wide state for one mail server: HTTP session, token, rate limiter."""

    def __init__(
        self,
        settings: MailServerSettings,
        limiter: RateLimiter | None,
        *,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        #: The gate row that holds the fleet's token: the limiter's own, unless this handle
        #: shares another handle's token (the staff reader, bridge/runtime.py).
        self.token_gate = limiter
        self.http = http or requests.Session()
        # Nothing from the environment: no CA variables (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE,
        # which requests lets override a session's verify, psf/requests#3829), no proxy
        # variables, no ~/.netrc credentials. Only the config decides where calls go and
        # which certificates count; verify is also passed on every request.
        self.http.trust_env = False
        self.verify: bool | str = settings.ca_bundle or settings.verify_tls
        self.http.verify = self.verify
        self.http.headers["User-Agent"] = "mailbridge/0.1"
        self.tokens = TokenCache()
        self.clock = clock
        #: List routes that answered 200 here: a later 404 on them is an empty page.
        self.lists_seen: set[str] = set()
        if settings.insecure_tls_i_understand:
            log.warning(
                "INSECURE: mailserver.insecure_tls_i_understand is set (base_url %s, "
                "verify_tls %s): the MasterAdmin password and token may travel unencrypted "
                "or to an unchecked server. Use it only for a test server.",
                settings.base_url,
                settings.verify_tls,
            )

    def client(self, deadline: float | None = None) -> MailServerClient:
        """A client for one reconcile; `deadline` is a time.monotonic() value."""
        return MailServerClient(self, deadline)


@dataclass
class Call:
    """One HTTP call as recorded on an attempt (never with a body or credentials)."""

    method: str
    path: str
    status: int | None
    ms: int
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "ms": self.ms,
            "error": self.error,
        }


class MailServerClient:
    """The API calls the bridge uses. Raises TransientError or PermanentError."""

    def __init__(self, server: MailServer, deadline: float | None = None) -> None:
        self.server = server
        self.settings = server.settings
        self.deadline = deadline
        self.calls: list[Call] = []

    @property
    def write_calls(self) -> int:
        """How many calls changed something."""
        return sum(1 for c in self.calls if c.method != "GET" and c.path != "/api/v1/auth/")

    # ---- the API ---------------------------------------------------------------------

    def find_domainadmin(self, username: str) -> DomainAdmin | Account | None:
        """The account with exactly this username (a DomainAdmin, another level, or None)."""
        for entry in self._list("/api/v1/accounts/", {"search": username}):
            if entry.get("username", "").lower() == username.lower():
                if entry.get("perm_level") == "DomainAdmin":
                    return DomainAdmin.from_api(entry)
                return Account(entry["username"], entry.get("perm_level", ""), entry)
        return None

    def list_domainadmins(self) -> Iterator[DomainAdmin]:
        """Every DomainAdmin on the server, page by page."""
        for entry in self._list("/api/v1/accounts/", {"perm_level": "DomainAdmin"}):
            yield DomainAdmin.from_api(entry)

    def list_mailusers(self, domains: tuple[str, ...]) -> list[MailUser]:
        """The MailUsers of these domains."""
        users: dict[str, MailUser] = {}
        for domain in domains:
            for entry in self._list(
                "/api/v1/accounts/", {"perm_level": "MailUser", "search": "@" + domain}
            ):
                name = entry.get("username", "")
                if entry.get("domain") == domain or name.lower().endswith("@" + domain.lower()):
                    users[name] = MailUser(name, domain, int(entry.get("enabled", 0)) == 1)
        return sorted(users.values(), key=lambda u: u.username)

    def create_domainadmin(
        self,
        username: str,
        password_hash: str,
        recovery_email: str,
        limits: dict[str, int],
        enabled: bool = True,
    ) -> None:
        """POST /api/v1/accounts/ with perm_level DomainAdmin and its quotas."""
        body: dict[str, Any] = {
            "username": username,
            "password": password_hash,
            "perm_level": "DomainAdmin",
            "api_access": 0,
            "enabled": 1 if enabled else 0,
            "recovery_email": recovery_email,
            "language": "en",
            "domains": "",
        }
        body.update({QUOTA_FIELDS[b][0]: v for b, v in limits.items()})
        self._call("POST", "/api/v1/accounts/", body)

    def update_account(self, username: str, changes: dict[str, Any]) -> None:
        """PATCH /api/v1/accounts/<username>/ with only the changed fields."""
        self._call(
            "PATCH",
            f"/api/v1/accounts/{segment(username)}/",
            changes,
            route="/api/v1/accounts/{username}/",
        )

    def cascade(self, username: str, action: str) -> None:
        """Enable or disable a DomainAdmin and every MailUser of its domains."""
        if action not in ("enable", "disable"):
            raise ValueError(action)
        self._call(
            "PATCH",
            f"/api/v1/accounts/cascade/domainadmin/{segment(username)}/{action}/",
            route=f"/api/v1/accounts/cascade/domainadmin/{{username}}/{action}/",
        )

    def delete_domainadmin(self, username: str) -> None:
        """Delete a DomainAdmin and what it owns (the WHMCS plugin's cascade delete)."""
        self._call(
            "DELETE",
            f"/api/v1/accounts/cascade/domainadmin/{segment(username)}/",
            route="/api/v1/accounts/cascade/domainadmin/{username}/",
        )

    def delete_account(self, username: str) -> None:
        """DELETE /api/v1/accounts/<username>/: one account (a MailUser, or a DomainAdmin
        without domains). Used only when the cascade delete route is missing."""
        self._call(
            "DELETE",
            f"/api/v1/accounts/{segment(username)}/",
            route="/api/v1/accounts/{username}/",
        )

    def delete_domain(self, domain: str) -> bool:
        """Delete a domain, or a relay domain of that name; False when neither exists.
        Used only when the cascade delete route is missing."""
        for path, key in (
            ("/api/v1/domains/", "domain"),
            ("/api/v1/relaydomains/", "relay_domain"),
        ):
            try:
                self._call("DELETE", path, {key: domain})
                return True
            except PermanentError as exc:
                if exc.status != 404:
                    raise
        return False

    def transfer_ownership(self, receiver: str) -> None:
        """Make `receiver` own everything under its `domains`.

        See docs/nms-api.md#ownership-transfer.
        """
        self._call(
            "POST",
            f"/api/v1/accounts/cascade/ownership/domainadmin/{segment(receiver)}/",
            route="/api/v1/accounts/cascade/ownership/domainadmin/{username}/",
        )

    def domainadmin_usage_page(self, start: int) -> list[AdminUsage]:
        """One page (50) of DomainAdmin rows: their limits and `*_used` counters."""
        rows = self._page("/api/v1/accounts/", start, "accounts")
        return [AdminUsage.from_api(r) for r in rows if r.get("perm_level") == "DomainAdmin"]

    def storage_stats_page(self, start: int) -> list[AdminUsage]:
        """One page (50) of `GET /api/v1/stats/quota/?perm_level=DomainAdmin`: storage in MB."""
        return [AdminUsage.from_api(r) for r in self._page("/api/v1/stats/quota/", start, None)]

    def probe(self) -> None:
        """One light call (the bridge's own account, one row) to learn whether the server
        answers again while the circuit is open."""
        self._call(
            "GET",
            "/api/v1/accounts/",
            params={"search": self.settings.username, "limit": 1, "start": 0},
        )

    # ---- plumbing --------------------------------------------------------------------

    def _page(self, path: str, start: int, key: str | None) -> list[dict[str, Any]]:
        """One page of DomainAdmins; an empty page may come as 200 [], 204 or 404."""
        params = {"perm_level": "DomainAdmin", "limit": PAGE, "start": start}
        try:
            data = self._call("GET", path, params=params)
        except PermanentError as exc:
            if exc.status == 404:
                return []
            raise
        if data is None:
            return []
        entries = data.get(key) if key and isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise TransientError("unexpected_answer", f"GET {path} answered without a list")
        return [e for e in entries if isinstance(e, dict) and e.get("username")]

    def _list(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Page through a list. An empty page may come as 200 `{"accounts": []}`, as 204,
        or as a 404 from a list route known to exist (docs/nms-api.md#empty-pages)."""
        start = 0
        while True:
            try:
                data = self._call("GET", path, params={**params, "limit": PAGE, "start": start})
            except PermanentError as exc:
                if exc.status == 404 and self._list_exists(path):
                    return
                raise
            if data is None:  # 204: nothing (more) to list
                return
            entries = data.get("accounts") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise TransientError("unexpected_answer", f"GET {path} answered without a list")
            self.server.lists_seen.add(path)
            yield from entries
            if len(entries) < PAGE:
                return
            start += PAGE

    def _list_exists(self, path: str) -> bool:
        """Whether a 404 on this list route means "nothing matched" rather than "no such
        route": true once the route has answered 200 in this process; otherwise one
        confirming call without filters (the caller itself is always listed) settles it."""
        if path in self.server.lists_seen:
            return True
        try:
            self._call("GET", path, params={"limit": 1, "start": 0})
        except PermanentError as exc:
            if exc.status != 404:
                raise
            raise PermanentError(
                "not_found",
                f"GET {path} is not served by the mail server (HTTP 404 even without a "
                "filter); check mailserver.base_url",
                status=404,
            ) from None
        self.server.lists_seen.add(path)
        return True

    def _timeout(self) -> tuple[float, float]:
        connect, read = self.settings.connect_timeout_s, self.settings.read_timeout_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0.05:
                raise TransientError("inline_timeout", "out of time to answer within the request")
            connect, read = min(connect, left), min(read, left)
        return connect, read

    def _token(self) -> str:
        """The fleet's token: this process's copy, else the database's, else a login made
        by one process at a time (the others wait for it and share it)."""
        cache = self.server.tokens
        limiter = self.server.token_gate
        with cache.lock:
            if cache.token and cache.renew_at > self.server.clock():
                return cache.token
            cache.token = None
            if limiter is None:
                return self._adopt(self._login())
            lease = self.settings.connect_timeout_s + self.settings.read_timeout_s + 5
            while True:
                claim = limiter.claim_login(cache.rejected, lease)
                if isinstance(claim, SharedToken):
                    return self._adopt(claim)
                if claim:
                    break
                # Another process is logging in: its token will be in the row shortly.
                if self.deadline is not None and time.monotonic() + LOGIN_POLL_S > self.deadline:
                    raise TransientError(
                        "inline_timeout", "out of time waiting for another process's login"
                    )
                limiter.sleep(LOGIN_POLL_S)
            try:
                fresh = self._login()
            except BaseException:
                limiter.release_login()
                raise
            limiter.store_token(fresh)
            return self._adopt(fresh)

    def _adopt(self, token: SharedToken) -> str:
        cache = self.server.tokens
        cache.token, cache.valid_to, cache.renew_at = token.token, token.valid_to, token.renew_at
        return token.token

    def _login(self) -> SharedToken:
        """POST /api/v1/auth/ with the MasterAdmin's password."""
        body = {"username": self.settings.username, "password": self.settings.password}
        try:
            data = self._send("POST", "/api/v1/auth/", body, auth=None)
        except PermanentError as exc:
            if exc.status not in (400, 401, 403):
                raise  # e.g. a TLS failure: say that, not "check the password"
            raise PermanentError(
                "mailserver_login_failed",
                f"the mail server refused the bridge's login ({exc.message}); check "
                "mailserver.username and mailserver.password",
            ) from None
        auth = data.get("auth") if isinstance(data, dict) else None
        if (
            not isinstance(auth, dict)
            or auth.get("status") != "success"
            or not auth.get("auth_token")
        ):
            raise PermanentError(
                "mailserver_login_failed",
                "the mail server refused the bridge's login; check mailserver.username "
                "and mailserver.password",
            )
        now = self.server.clock()
        valid_to = float(auth.get("valid_to") or now + 3600)
        # Renew a little before expiry: 5 min for the NMS's 24 h tokens, a tenth of the
        # lifetime for short ones, so a short-lived token is still reused.
        lifetime = valid_to - float(auth.get("valid_from") or now)
        margin = min(TOKEN_MARGIN_S, max(0.0, lifetime) / 10)
        self.server.tokens.logins += 1
        metrics.LOGINS.inc()
        log.info("logged in to the mail server as %s", self.settings.username)
        return SharedToken(str(auth["auth_token"]), valid_to, valid_to - margin)

    def _forget_token(self, token: str) -> None:
        """The server refused `token`: never use it again, here or in any process."""
        cache = self.server.tokens
        with cache.lock:
            cache.rejected = token
            if cache.token == token:
                cache.token = None
            if self.server.token_gate is not None:
                self.server.token_gate.drop_token(token)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        *,
        route: str | None = None,
    ) -> Any:
        """One authenticated call; `route` is the path without usernames, for metrics."""
        token = self._token()
        try:
            return self._send(
                method, path, body, params=params, auth=(self.settings.username, token), route=route
            )
        except PermanentError as exc:
            if exc.status != 401:
                raise
        # The token expired or was revoked early (or another process's login replaced it on
        # a server that keeps one token per user): take the newer one or log in, and retry.
        self._forget_token(token)
        token = self._token()
        try:
            return self._send(
                method, path, body, params=params, auth=(self.settings.username, token), route=route
            )
        except PermanentError as exc:
            if exc.status == 401:
                raise PermanentError(
                    "mailserver_auth_failed",
                    "the mail server refused a fresh token; check the MasterAdmin account",
                    status=401,
                ) from None
            raise

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        auth: tuple[str, str] | None,
        route: str | None = None,
    ) -> Any:
        limiter = self.server.limiter
        if limiter is not None:
            deadline_wall = None
            if self.deadline is not None:
                deadline_wall = time.time() + (self.deadline - time.monotonic())
            limiter.acquire(deadline_wall)
        url = self.settings.base_url.rstrip("/") + path
        started = time.monotonic()
        call = Call(method, path, None, 0)
        self.calls.append(call)
        try:
            response = self.server.http.request(
                method,
                url,
                json=body,
                params=params,
                auth=auth,
                timeout=self._timeout(),
                verify=self.server.verify,
                allow_redirects=False,
            )
        except requests.Timeout:
            error: TransientError | PermanentError = TransientError(
                "mailserver_timeout", f"{method} {path}: no answer in time"
            )
        except requests.exceptions.SSLError as exc:
            error = PermanentError(
                "tls_verification_failed",
                f"{method} {path}: the mail server's TLS certificate was not accepted "
                f"({exc.__class__.__name__}); fix the certificate or set mailserver.ca_bundle",
            )
        except requests.ConnectionError:
            error = TransientError("mailserver_unreachable", f"{method} {path}: connection failed")
        else:
            call.status = response.status_code
            call.ms = int((time.monotonic() - started) * 1000)
            _measure(method, route or path, str(response.status_code), started)
            try:
                result = self._interpret(method, path, response)
            except (TransientError, PermanentError) as exc:
                call.error = exc.reason
                self._report(exc)
                raise
            if limiter is not None:
                limiter.succeeded()
            return result
        call.ms = int((time.monotonic() - started) * 1000)
        call.error = error.reason
        _measure(method, route or path, error.reason, started)
        self._report(error)
        raise error

    def _report(self, error: TransientError | PermanentError) -> None:
        limiter = self.server.limiter
        if limiter is None:
            return
        if isinstance(error, TransientError):
            limiter.failed(
                error.retry_after,
                throttled=error.reason == "rate_limited",
                banned=error.reason == "mailserver_banned",
            )
        else:
            limiter.succeeded()  # the server is alive; it just said no

    def _interpret(self, method: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        where = f"{method} {path}"
        content_type = response.headers.get("Content-Type", "")
        data: Any = None
        if "json" in content_type:
            try:
                data = response.json()
            except ValueError:
                data = None
        message = ""
        code = data.get("error") if isinstance(data, dict) else None
        if isinstance(data, dict):
            message = str(data.get("message") or (data.get("auth") or {}).get("message") or "")
        if 300 <= status < 400:
            # Never followed: the credentials go only to the configured origin.
            location = truncate(response.headers.get("Location") or "(no Location)", 200)
            raise PermanentError(
                "mailserver_redirect",
                f"{where}: HTTP {status} redirect to {location}; the bridge does not follow "
                "redirects, so its credentials go only to mailserver.base_url: set base_url "
                "to the address the mail server really answers on",
                status=status,
            )
        retry_after = self._retry_after(response.headers.get("Retry-After"))
        if status in (403, 429) and (code in BAN_CODES or (status == 403 and retry_after)):
            seconds = retry_after or min(DEFAULT_BAN_S, self.settings.max_retry_after_s)
            raise TransientError(
                "mailserver_banned",
                f"{where}: the mail server banned us until "
                f"{when(self.server.clock() + seconds)} ({truncate(message or str(code), 120)}); "
                "events wait and go out after it",
                status=status,
                retry_after=seconds,
            )
        if status == 429:
            raise TransientError(
                "rate_limited",
                f"{where}: the mail server asked us to slow down",
                status=status,
                retry_after=retry_after,
            )
        if status >= 500 or (status >= 400 and "html" in content_type):
            kind = "gateway page" if "html" in content_type else "server error"
            raise TransientError(
                "mailserver_unavailable", f"{where}: HTTP {status} {kind}", status=status
            )
        if status == 401:
            raise PermanentError(
                "unauthorized", f"{where}: {message or 'unauthorized'}", status=401
            )
        if status == 404 and method == "GET" and isinstance(data, dict):
            if data.get("accounts") == []:
                return data  # "nothing found", said with a 404
        if status >= 400:
            reason = {400: "rejected", 403: "not_permitted", 404: "not_found", 409: "conflict"}.get(
                status, "rejected"
            )
            detail = f" ({code})" if isinstance(code, str) and code else ""
            raise PermanentError(
                reason,
                f"{where}: HTTP {status}{detail}: {truncate(message or response.text)}",
                status=status,
            )
        if status == 204:
            return None
        if data is None:
            # A 2xx that is not JSON: a proxy page or a broken answer, never a success.
            raise TransientError(
                "unexpected_answer", f"{where}: HTTP {status} without a JSON body", status=status
            )
        if isinstance(data, dict) and data.get("error"):
            raise TransientError(
                "error_body_with_200",
                f"{where}: HTTP {status} but the body reports an error: "
                f"{message or data.get('error')}",
                status=status,
            )
        return data

    def _retry_after(self, value: str | None) -> float | None:
        """Retry-After in seconds (RFC 9110 section 10.2.3: seconds or an HTTP date), capped
        at mailserver.max_retry_after_s so no answer can stop provisioning for long."""
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - self.server.clock()
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        if seconds != seconds:  # NaN
            return None
        return min(max(0.0, seconds), self.settings.max_retry_after_s)


def _measure(method: str, route: str, status: str, started: float) -> None:
    metrics.MAILSERVER_CALLS.labels(method, route, status).inc()
    metrics.MAILSERVER_SECONDS.labels(method, route).observe(time.monotonic() - started)
