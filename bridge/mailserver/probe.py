"""`bridge check-server`: settle, on the configured NMS, what its public docs leave open.

A handful of calls with throwaway DomainAdmins (`zz-bridge-probe-<hex>` and `...-2`, plus the
domain `zz-bridge-probe-<hex>.example.com`) observe each assumption listed in
docs/nms-api.md#checking-a-real-server. Everything the probe creates is removed at the end,
also when a step fails or the run is interrupted. The result is a `ServerProfile`, stored
by `bridge check-server` (bridge/mailserver/profile.py) and read back by the parts of the
bridge that depend on it (a quota of 0, for one).

The probe goes through the shared rate limiter like every other call, except the optional
burst of `--probe-rate-limit`, whose point is to cross the server's limit once.
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import requests

from bridge.db import utcnow
from bridge.mailserver.client import QUOTA_FIELDS, MailServer
from bridge.mailserver.errors import TransientError, truncate
from bridge.mailserver.profile import (
    Case,
    EmptyAnswer,
    ErrorBody,
    ServerProfile,
    ZeroQuota,
    profile_key,
)
from bridge.mailserver.ratelimit import RateLimiter
from bridge.passwords import check_and_hash

PREFIX = "zz-bridge-probe-"
AUTH = "/api/v1/auth/"
ACCOUNTS = "/api/v1/accounts/"
DOMAINS = "/api/v1/domains/"
#: The NMS names of the usage counters on a DomainAdmin row.
USAGE_FIELDS = tuple(used for _, used in QUOTA_FIELDS.values())
#: A record offset no server reaches: the answer shows how paging ends.
FAR_START = 1_000_000
#: At most this many quick calls look for the server's rate limit (--probe-rate-limit).
BURST = 40
#: The longest pause (a 429's Retry-After, say) the probe waits out instead of stopping.
MAX_WAIT_S = 60.0

# ---- checks ------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What an observation means for the bridge."""

    OK = "OK"  # as assumed
    ADAPTED = "ADAPTED"  # differs; the bridge copes (the row says how)
    BLOCKER = "BLOCKER"  # differs; something will fail until a person acts
    NOT_PROBED = "NOT PROBED"  # not observed (skipped, or a step before it failed)


#: Each assumption: its short name and what the bridge expects. Shown in this order.
ASSUMPTIONS: dict[str, tuple[str, str]] = {
    "login": ("MasterAdmin login", "200 with an auth_token"),
    "empty_search": ("search without a match", '200 {"accounts": []}'),
    "far_start": ("page past the end", '200 {"accounts": []}'),
    "token_per_login": ("first token after a 2nd login", "still valid"),
    "create": ("create a DomainAdmin", "2xx, then found by search"),
    "username_case": ("username with capitals", "stored as sent"),
    "email_case": ("recovery e-mail with capitals", "read back as sent"),
    "usage_fields": ("*_used fields on the row", "all five present"),
    "zero_quota": ("quota 0", "reads back 0 and allows none"),
    "shared_domain": ("2nd DomainAdmin lists a listed domain", "accepted"),
    "error_body": ("body of a refusal (404)", '{"error": ..., "message": ...}'),
    "plain_delete": ("DELETE accounts/<u>/", "2xx"),
    "cascade_delete": ("DELETE accounts/cascade/domainadmin/<u>/", "2xx"),
    "cascade_domains": ("cascade delete and the domains", "informational"),
    "rate_limit": ("over the rate limit", "429 with Retry-After"),
    "ban": ("ban after repeated excess", "not probed"),
}


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    key: str
    observed: str
    verdict: Verdict
    #: What the bridge does about it, or what a person should do.
    todo: str = ""

    @property
    def label(self) -> str:
        """The assumption's short name."""
        return ASSUMPTIONS[self.key][0]

    @property
    def expected(self) -> str:
        """What the bridge expects."""
        return ASSUMPTIONS[self.key][1]

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {
            "key": self.key,
            "assumption": self.label,
            "expected": self.expected,
            "observed": self.observed,
            "verdict": self.verdict.value,
            "todo": self.todo,
        }


@dataclass
class ProbeReport:
    """What one run of the probe found."""

    profile: ServerProfile
    checks: list[Check]
    calls: int
    #: Why the run stopped early (nothing to store then), or None.
    aborted: str | None = None
    #: What the probe created and could not remove (remove it by hand).
    leftovers: list[str] = field(default_factory=list)

    @property
    def blockers(self) -> list[Check]:
        """The rows a person must act on."""
        return [c for c in self.checks if c.verdict is Verdict.BLOCKER]

    @property
    def passed(self) -> bool:
        """Complete, nothing left behind and no blocker."""
        return self.aborted is None and not self.leftovers and not self.blockers

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "base_url": self.profile.base_url,
            "checked_at": self.profile.checked_at.isoformat(),
            "passed": self.passed,
            "blockers": len(self.blockers),
            "aborted": self.aborted,
            "leftovers": self.leftovers,
            "calls": self.calls,
            "checks": [c.as_dict() for c in self.checks],
            "profile": self.profile.as_dict(),
        }


# ---- the probe ---------------------------------------------------------------------------


class ProbeAborted(Exception):
    """A step cannot go on (no answer, a server error, the login refused)."""


@dataclass(frozen=True)
class Answer:
    """One raw HTTP answer."""

    status: int
    data: Any
    text: str
    html: bool
    retry_after: str | None

    @classmethod
    def of(cls, response: requests.Response) -> Answer:
        """Read a response without judging it."""
        content_type = response.headers.get("Content-Type", "")
        data: Any = None
        if "json" in content_type:
            try:
                data = response.json()
            except ValueError:
                data = None
        return cls(
            response.status_code,
            data,
            truncate(response.text, 120),
            "html" in content_type,
            response.headers.get("Retry-After"),
        )

    @property
    def ok(self) -> bool:
        """A 2xx."""
        return 200 <= self.status < 300

    def accounts(self) -> list[dict[str, Any]] | None:
        """The `accounts` list of a JSON answer, or None."""
        entries = self.data.get("accounts") if isinstance(self.data, dict) else None
        if not isinstance(entries, list):
            return None
        return [e for e in entries if isinstance(e, dict)]

    def said(self) -> str:
        """`HTTP 409 quota_exceeded: ...`, short."""
        if isinstance(self.data, dict):
            error, message = self.data.get("error"), self.data.get("message")
            detail = " ".join(str(x) for x in (error, message) if x)
            if detail:
                return f"HTTP {self.status} {truncate(detail, 100)}"
        if self.html and self.text:
            return f"HTTP {self.status} (HTML page)"
        return f"HTTP {self.status} {self.text}".rstrip()


def _tag() -> str:
    """Random hex with at least one letter, so its upper-case form differs."""
    while True:
        tag = secrets.token_hex(4)
        if any(c.isalpha() for c in tag):
            return tag


def _empty_answer(answer: Answer) -> tuple[EmptyAnswer, str]:
    if answer.status == 200 and answer.accounts() == []:
        return "200", 'HTTP 200 {"accounts": []}'
    if answer.status == 204:
        return "204", "HTTP 204, no body"
    if answer.status == 404:
        return "404", answer.said()
    entries = answer.accounts()
    if answer.status == 200 and entries:
        return "other", f"HTTP 200 with {len(entries)} account(s)"
    return "other", answer.said()


@contextmanager
def _shielded() -> Iterator[None]:
    """Ignore Ctrl-C while the throwaway accounts are removed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Probe:
    """One run against `server` (its HTTP session, TLS settings and shared rate limiter)."""

    def __init__(
        self, server: MailServer, *, probe_rate_limit: bool = False, tag: str | None = None
    ) -> None:
        self.server = server
        self.settings = server.settings
        self.probe_rate_limit = probe_rate_limit
        self.tag = tag or _tag()
        self.name = PREFIX + self.tag  # the first DomainAdmin, in lower case
        self.capitals = PREFIX + self.tag.upper()
        self.second = self.name + "-2"
        self.domain = self.name + ".example.com"
        self.email = f"Bridge-Probe-{self.tag.upper()}@Example.com"
        self.password = secrets.token_urlsafe(18) + "Aa1"
        self.calls = 0
        self.token: str | None = None
        self.checks: dict[str, Check] = {}
        self.observed: dict[str, Any] = {}
        #: The first DomainAdmin's username as the server keeps it.
        self.first = self.name
        self.touched = False  # a create was sent: the clean-up has work to do
        self.second_made = False
        self.domain_made = False
        #: What the clean-up could not remove (also after Ctrl-C).
        self.leftovers: list[str] = []

    # ---- running -------------------------------------------------------------------------

    def run(self) -> ProbeReport:
        """Every step, then the clean-up (also on failure or Ctrl-C), then the report."""
        checked_at = utcnow()
        aborted: str | None = None
        try:
            self._steps()
        except ProbeAborted as exc:
            aborted = str(exc)
        finally:
            with _shielded():
                self.leftovers = self._cleanup()
        if self.probe_rate_limit and aborted is None:
            try:
                self._rate_limit()
            except ProbeAborted as exc:
                self._check("rate_limit", str(exc), Verdict.NOT_PROBED)
        elif aborted is None:
            self._check("rate_limit", "not probed (add --probe-rate-limit)", Verdict.NOT_PROBED)
        self._check(
            "ban",
            "not probed: it would get this address banned for an hour or more",
            Verdict.NOT_PROBED,
            "keep mailserver.rate_limit_per_s at or below 15",
        )
        missing = f"not reached: {aborted}" if aborted else "not probed"
        checks = [
            self.checks.get(key) or Check(key, missing, Verdict.NOT_PROBED) for key in ASSUMPTIONS
        ]
        profile = ServerProfile(
            base_url=profile_key(self.settings.base_url), checked_at=checked_at, **self.observed
        )
        return ProbeReport(profile, checks, self.calls, aborted, self.leftovers)

    def _check(self, key: str, observed: str, verdict: Verdict, todo: str = "") -> None:
        self.checks[key] = Check(key, observed, verdict, todo)

    # ---- HTTP ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None,
        body: Any = None,
        params: dict[str, Any] | None = None,
        limited: bool = True,
    ) -> Answer:
        """One call through the shared rate limiter; a 5xx or no answer stops the run."""
        limiter = self.server.limiter if limited else None
        for attempt in (1, 2):
            if limiter is not None:
                self._take_slot(limiter)
            self.calls += 1
            try:
                response = self.server.http.request(
                    method,
                    self.settings.base_url.rstrip("/") + path,
                    json=body,
                    params=params,
                    auth=auth,
                    timeout=(self.settings.connect_timeout_s, self.settings.read_timeout_s),
                    verify=self.server.verify,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError:
                raise ProbeAborted(
                    f"{method} {path}: the TLS certificate was not accepted; fix it or set "
                    "mailserver.ca_bundle"
                ) from None
            except requests.RequestException as exc:
                raise ProbeAborted(
                    f"{method} {path}: no answer ({exc.__class__.__name__}); check "
                    "mailserver.base_url and the network, then run again"
                ) from None
            answer = Answer.of(response)
            if 300 <= answer.status < 400:
                where = response.headers.get("Location", "elsewhere")
                raise ProbeAborted(
                    f"{method} {path}: HTTP {answer.status} to {where}; the bridge follows no "
                    "redirects, set mailserver.base_url to the server's own address"
                )
            if answer.status == 429 and limiter is not None:
                # Another client shares this address and its limit: everyone pauses (the
                # next acquire() waits), then one more try.
                limiter.failed(_seconds(answer.retry_after), throttled=True)
                if attempt == 1:
                    continue
            if limited and (answer.status >= 500 or answer.status == 429):
                raise ProbeAborted(
                    f"{method} {path}: {answer.said()}; the server is busy or failing, run "
                    "check-server again later"
                )
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_slot(self, limiter: RateLimiter) -> None:
        """A call slot from the shared limiter. The limiter never sleeps long itself (it
        answers `rate_limited` with the wait instead); a short pause, such as the
        Retry-After of a 429, the probe waits out once, a long one stops the run."""
        try:
            limiter.acquire()
            return
        except TransientError as exc:
            wait = exc.retry_after
            if wait is None or wait > MAX_WAIT_S:
                raise ProbeAborted(f"{exc.reason}: {exc.message}") from None
        limiter.sleep(wait)
        try:
            limiter.acquire()
        except TransientError as exc:
            raise ProbeAborted(f"{exc.reason}: {exc.message}") from None

    def _login(self, username: str, password: str) -> tuple[Answer, str | None]:
        answer = self._send(
            "POST", AUTH, auth=None, body={"username": username, "password": password}
        )
        auth = answer.data.get("auth") if isinstance(answer.data, dict) else None
        token = auth.get("auth_token") if isinstance(auth, dict) else None
        if not answer.ok or not token:
            return answer, None
        return answer, str(token)

    def _master_login(self) -> str:
        answer, token = self._login(self.settings.username, self.settings.password)
        if token is None:
            self._check(
                "login",
                answer.said(),
                Verdict.BLOCKER,
                "check mailserver.username and mailserver.password (a MasterAdmin with API "
                "access and no two-factor login)",
            )
            raise ProbeAborted("the MasterAdmin login was refused")
        self.token = token
        return token

    def _as_master(self, method: str, path: str, token: str | None = None, **kw: Any) -> Answer:
        """A call as the MasterAdmin; a 401 logs in again once (unless `token` is given)."""
        if token is not None:
            return self._send(method, path, auth=(self.settings.username, token), **kw)
        current = self.token or self._master_login()
        answer = self._send(method, path, auth=(self.settings.username, current), **kw)
        if answer.status == 401:
            fresh = self._master_login()
            answer = self._send(method, path, auth=(self.settings.username, fresh), **kw)
        return answer

    def _search(self, term: str, token: str | None = None, start: int = 0) -> Answer:
        params: dict[str, Any] = {"limit": 50, "start": start}
        if term:
            params["search"] = term
        return self._as_master("GET", ACCOUNTS, token, params=params)

    def _create(self, username: str, email: str, quota: int, api_access: int) -> Answer:
        """The create the bridge sends (bridge/mailserver/client.py), with chosen quotas."""
        body: dict[str, Any] = {
            "username": username,
            "password": check_and_hash(self.password),
            "perm_level": "DomainAdmin",
            "api_access": api_access,
            "enabled": 1,
            "recovery_email": email,
            "language": "en",
            "domains": "",
        }
        body.update({limit: quota for limit, _ in QUOTA_FIELDS.values()})
        self.touched = True
        return self._as_master("POST", ACCOUNTS, body=body)

    # ---- the steps -----------------------------------------------------------------------

    def _steps(self) -> None:
        first_token = self._master_login()
        self._check("login", "200 with an auth_token", Verdict.OK)
        self._empty_and_tokens(first_token)
        entry, quota, capitals = self._create_first()
        self._names(entry, quota, capitals)
        self._usage(entry)
        self._zero_quota(entry, quota)
        self._shared_domain()
        self._error_body()
        self._deletes()

    def _empty_and_tokens(self, first_token: str) -> None:
        kind, said = _empty_answer(self._search(self.name))
        self.observed["empty_search"] = kind
        self._empty_check("empty_search", kind, said)
        self._master_login()  # a second login: is the first token still good?
        far = self._search("", token=first_token, start=FAR_START)
        self.observed["token_per_login"] = far.status != 401
        if far.status == 401:
            self._check(
                "token_per_login",
                "HTTP 401: one token per user",
                Verdict.ADAPTED,
                "the bridge keeps one token for all its processes in the database",
            )
            far = self._search("", start=FAR_START)
        else:
            self._check("token_per_login", "still valid", Verdict.OK)
        kind, said = _empty_answer(far)
        self.observed["far_start"] = kind
        self._empty_check("far_start", kind, said)

    def _empty_check(self, key: str, kind: EmptyAnswer, said: str) -> None:
        if kind == "200":
            self._check(key, said, Verdict.OK)
        elif kind in ("204", "404"):
            self._check(key, said, Verdict.ADAPTED, "the bridge reads it as no match")
        else:
            self._check(
                key,
                said,
                Verdict.BLOCKER,
                "the bridge cannot tell that an account does not exist (creates fail) or "
                "where paging ends; report this answer to the bridge's maintainers",
            )

    def _create_first(self) -> tuple[dict[str, Any], int, bool]:
        """Create the first DomainAdmin with capitals and quotas of 0, as far as the server
        takes them; its row as a search reads it, the quota sent, whether capitals were."""
        refusals: list[str] = []
        for username, quota in ((self.capitals, 0), (self.name, 0), (self.name, 1)):
            answer = self._create(username, self.email, quota, api_access=1)
            if answer.ok:
                break
            refusals.append(f"{username} with quotas of {quota}: {answer.said()}")
        else:
            self._check(
                "create",
                "; ".join(refusals),
                Verdict.BLOCKER,
                "the server refuses the create the bridge sends; report the answer",
            )
            raise ProbeAborted("the server refused every create")
        rows = self._search(self.name).accounts() or []
        entry = next((e for e in rows if str(e.get("username", "")).lower() == self.name), None)
        if entry is None:
            self._check(
                "create",
                "created, but a search does not find it",
                Verdict.BLOCKER,
                "the bridge would create the same account again and again; report this",
            )
            raise ProbeAborted("the created account is not found by search")
        self.first = str(entry["username"])
        self._check("create", "created and found", Verdict.OK)
        return entry, quota, username == self.capitals

    def _names(self, entry: dict[str, Any], quota: int, capitals: bool) -> None:
        if not capitals:
            # Capitals were refused; with quotas of 0 the lower-case name then went through.
            case: Case = "refused" if quota == 0 else "unknown"
        else:
            case = "kept" if self.first == self.capitals else "lowered"
        self.observed["username_case"] = case
        if case == "kept":
            self._check("username_case", f"kept ({self.first})", Verdict.OK)
        elif case == "lowered":
            self._check(
                "username_case",
                f"lower-cased ({self.first})",
                Verdict.ADAPTED,
                "the bridge compares usernames ignoring case",
            )
        elif case == "refused":
            self._check(
                "username_case",
                "refused; lower case accepted",
                Verdict.OK,
                "billing must send lower-case usernames; others fail with `rejected`",
            )
        else:
            self._check(
                "username_case", "not settled (a quota of 0 was refused too)", Verdict.NOT_PROBED
            )

        got = str(entry.get("recovery_email") or "")
        if got == self.email:
            self.observed["email_case"] = "kept"
            self._check("email_case", f"kept ({got})", Verdict.OK)
        elif got.lower() == self.email.lower():
            self.observed["email_case"] = "lowered"
            self._check(
                "email_case",
                f"lower-cased ({got})",
                Verdict.ADAPTED,
                "the bridge compares e-mails ignoring case",
            )
        else:
            self._check(
                "email_case",
                f"read back as {got!r}",
                Verdict.BLOCKER,
                "the bridge cannot recognise its own accounts by recovery e-mail; report this",
            )

    def _usage(self, entry: dict[str, Any]) -> None:
        missing = tuple(f for f in USAGE_FIELDS if entry.get(f) is None)
        self.observed["usage_fields_missing"] = missing
        if not missing:
            self._check("usage_fields", "all present", Verdict.OK)
        else:
            self._check(
                "usage_fields",
                "all five missing"
                if len(missing) == len(USAGE_FIELDS)
                else "missing: " + ", ".join(missing),
                Verdict.ADAPTED,
                "lowering those limits is refused (usage_unknown); check usage in the NMS "
                "and change such packages by hand",
            )

    def _zero_quota(self, entry: dict[str, Any], quota: int) -> None:
        def unsure(observed: str, zero: ZeroQuota = "unknown") -> None:
            self.observed["zero_quota"] = zero
            self._check(
                "zero_quota",
                observed,
                Verdict.ADAPTED,
                "a tier with a 0 is refused (quota_zero_ambiguous) by `bridge mappings check` "
                "and on arrival; use 1 or more",
            )

        if quota != 0:
            unsure("a create with quotas of 0 is refused", "refused")
            return
        odd = {k: entry.get(k) for k, _ in QUOTA_FIELDS.values() if entry.get(k) != 0}
        if odd:
            unsure("0 sent, read back " + ", ".join(f"{k}={v}" for k, v in odd.items()))
            return
        # Does 0 limit anything? The DomainAdmin (quota_domains 0) tries to add a domain.
        login, token = self._login(self.first, self.password)
        if token is None:
            unsure(f"reads back 0; the DomainAdmin's login failed ({login.said()})")
            return
        answer = self._send("POST", DOMAINS, auth=(self.first, token), body={"domain": self.domain})
        if answer.ok:
            self.domain_made = True
            unsure("reads back 0 but limits nothing (a domain was added)", "unlimited")
        elif answer.status == 409 or "quota" in answer.said().lower():
            self.observed["zero_quota"] = "zero"
            self._check("zero_quota", "reads back 0; a domain is refused", Verdict.OK)
        else:
            unsure(f"reads back 0; adding a domain answered {answer.said()}")

    def _shared_domain(self) -> None:
        if not self.domain_made:
            made = self._as_master("POST", DOMAINS, body={"domain": self.domain})
            if not made.ok:
                self._check(
                    "shared_domain", f"no domain to try ({made.said()})", Verdict.NOT_PROBED
                )
                return
            self.domain_made = True
        listed = self._as_master(
            "PATCH", f"{ACCOUNTS}{self.first}/", body={"domains": self.domain, "quota_domains": 1}
        )
        if not listed.ok:
            self._check(
                "shared_domain",
                f"the first DomainAdmin cannot list it ({listed.said()})",
                Verdict.NOT_PROBED,
            )
            return
        created = self._create(self.second, f"bridge-probe-{self.tag}@example.com", 1, 0)
        if not created.ok:
            self._check(
                "shared_domain", f"no second DomainAdmin ({created.said()})", Verdict.NOT_PROBED
            )
            return
        self.second_made = True
        answer = self._as_master(
            "PATCH", f"{ACCOUNTS}{self.second}/", body={"domains": self.domain}
        )
        if answer.ok:
            self.observed["shared_domains"] = True
            self._check("shared_domain", "accepted", Verdict.OK)
        elif answer.status == 409:
            self.observed["shared_domains"] = False
            self._check(
                "shared_domain",
                f"refused ({answer.said()})",
                Verdict.BLOCKER,
                "a transfer adds the domains to the receiver while the giver still lists "
                "them, so transfers fail with `conflict`; do transfers by hand in the NMS",
            )
        else:
            self._check("shared_domain", answer.said(), Verdict.NOT_PROBED)

    def _error_body(self) -> None:
        answer = self._as_master("PATCH", f"{ACCOUNTS}{self.name}-none/", body={"enabled": 1})
        data = answer.data
        kind: ErrorBody
        if answer.status < 400:
            kind = "unknown"
            verdict, todo = Verdict.BLOCKER, "a change of a missing account succeeds; report this"
        elif isinstance(data, dict) and "error" in data and "message" in data:
            kind, verdict, todo = "json", Verdict.OK, ""
        elif data is not None:
            kind, verdict, todo = "json_other", Verdict.ADAPTED, "the bridge shows it as text"
        elif answer.html:
            kind, verdict = "html", Verdict.ADAPTED
            todo = (
                "the bridge reads a 4xx HTML page as a gateway page and retries it until the "
                "retry window ends, so refusals show late"
            )
        else:
            kind, verdict, todo = "empty", Verdict.ADAPTED, "the bridge shows the status only"
        self.observed["error_body"] = kind
        self._check("error_body", answer.said(), verdict, todo)

    def _plain_delete(self, username: str) -> Answer:
        self._as_master("PATCH", f"{ACCOUNTS}{username}/", body={"domains": ""})
        return self._as_master("DELETE", f"{ACCOUNTS}{username}/")

    def _deletes(self) -> None:
        plain = self._plain_delete(self.second) if self.second_made else None
        cascade = self._as_master("DELETE", f"{ACCOUNTS}cascade/domainadmin/{self.first}/")
        if not cascade.ok:
            first = self._plain_delete(self.first)
            plain = plain or first
        self.observed["cascade_delete"] = cascade.ok
        if plain is None:
            self._check("plain_delete", "not needed", Verdict.NOT_PROBED)
        else:
            self.observed["plain_delete"] = plain.ok
            if plain.ok or cascade.ok:
                todo = "" if plain.ok else "not needed while the cascade route works"
                self._check("plain_delete", plain.said(), Verdict.OK, todo)
            else:
                self._check(
                    "plain_delete",
                    plain.said(),
                    Verdict.BLOCKER,
                    "neither delete works: a terminate leaves the account disabled for staff "
                    "to delete in the NMS",
                )
        if cascade.ok:
            self._check("cascade_delete", cascade.said(), Verdict.OK)
        else:
            works = plain is not None and plain.ok
            self._check(
                "cascade_delete",
                cascade.said(),
                Verdict.ADAPTED if works else Verdict.BLOCKER,
                "a terminate falls back to emptying the account's domains, then the plain delete"
                if works
                else "terminate cannot delete: the account stays disabled until staff delete it",
            )
        if not self.domain_made:
            return
        gone = self._as_master("DELETE", DOMAINS, body={"domain": self.domain})
        if not (gone.ok or gone.status == 404):
            return  # the clean-up tries again and reports it
        self.domain_made = False
        if cascade.ok:
            self.observed["cascade_removes_domains"] = not gone.ok
            if gone.ok:
                self._check(
                    "cascade_domains",
                    "keeps them (the probe removed its domain)",
                    Verdict.OK,
                    "after a terminate, staff remove the customer's domains in the NMS",
                )
            else:
                self._check("cascade_domains", "removes them", Verdict.OK)

    # ---- clean-up and the rate limit -----------------------------------------------------

    def _cleanup(self) -> list[str]:
        """Remove whatever is left (a step failed, Ctrl-C); return what could not be."""
        if not self.touched:
            return []
        try:
            left = self._leftovers()
            for name in left:
                if not self._plain_delete(name).ok:
                    self._as_master("DELETE", f"{ACCOUNTS}cascade/domainadmin/{name}/")
            if self.domain_made:
                gone = self._as_master("DELETE", DOMAINS, body={"domain": self.domain})
                if gone.ok or gone.status == 404:
                    self.domain_made = False
            names = self._leftovers() if left else []
        except ProbeAborted as exc:
            return [f"{self.name}* ({exc})"] + ([self.domain] if self.domain_made else [])
        return names + ([self.domain] if self.domain_made else [])

    def _leftovers(self) -> list[str]:
        """The probe's accounts still on the server."""
        answer = self._search(self.name)
        if answer.status in (204, 404):
            return []
        entries = answer.accounts()
        if entries is None:
            raise ProbeAborted(f"cannot list what is left: {answer.said()}")
        names = [str(e.get("username", "")) for e in entries]
        return [n for n in names if n.lower().startswith(self.name)]

    def _rate_limit(self) -> None:
        """Cross the server's limit once with quick reads; stop at the first refusal."""
        refusal: Answer | None = None
        for _ in range(BURST):
            answer = self._as_master(
                "GET", ACCOUNTS, params={"search": self.name, "limit": 1}, limited=False
            )
            if answer.status in (403, 429, 503):
                refusal = answer
                break
        if refusal is None:
            self.observed["rate_limit_status"] = 0
            self._check("rate_limit", f"no refusal in {BURST} quick calls", Verdict.OK)
            return
        seconds = _seconds(refusal.retry_after)
        self.observed["rate_limit_status"] = refusal.status
        self.observed["retry_after"] = seconds
        if self.server.limiter is not None:
            # every process waits it out; a 403 is a ban, which the gate keeps to its end
            banned = refusal.status == 403
            self.server.limiter.failed(seconds, throttled=not banned, banned=banned)
        shown = f"HTTP {refusal.status}, Retry-After {refusal.retry_after or 'absent'}"
        if refusal.status == 429 and seconds is not None:
            self._check("rate_limit", shown, Verdict.OK)
        elif refusal.status == 429:
            self._check("rate_limit", shown, Verdict.ADAPTED, "the bridge pauses 5 s")
        else:
            self._check(
                "rate_limit",
                shown,
                Verdict.ADAPTED,
                "the bridge reads it as a pause (a ban or a busy server), not a failure",
            )


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
