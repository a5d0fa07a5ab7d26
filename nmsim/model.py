"""In-memory NMS state: accounts, domains, forwarders, ownership-based quotas.

Every method that takes a `caller` enforces the permission rules of nmsim/README.md#permissions.
Nothing here is thread-safe: the Flask layer holds the simulator lock around each call.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nmsim.config import SimClock, SimConfig
from nmsim.security import (
    TokenStore,
    hash_password,
    is_sha512_crypt,
    password_problem,
)

MASTER = "MasterAdmin"
DOMAIN_ADMIN = "DomainAdmin"
MAIL_USER = "MailUser"
PERM_LEVELS = (MASTER, DOMAIN_ADMIN, MAIL_USER)

BASE_FIELDS = (
    "username",
    "password",
    "perm_level",
    "api_access",
    "enabled",
    "recovery_email",
    "language",
)
QUOTA_FIELDS = (
    "quota_domains",
    "quota_domainaliases",
    "quota_aliases",
    "quota_mailboxes",
    "storagequota_total",
)
DA_FIELDS = ("domains", *QUOTA_FIELDS)
MU_FIELDS = ("domain", "storagequota_total")
USED = {q: q + "_used" for q in QUOTA_FIELDS} | {"storagequota_total": "storagequota_used"}
PATCH_BASE = ("password", "api_access", "enabled", "recovery_email", "language")
PATCH_SELF = ("password", "recovery_email", "language")

PAGE_MAX = 50
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+@-]{0,127}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")

# kind -> (key field, noun used in messages)
ZONE_KEYS = {"domain": "domain", "relay": "relay_domain", "alias": "domain_alias"}
ZONE_NOUNS = {"domain": "domain", "relay": "relay domain", "alias": "domain alias"}


class ApiError(Exception):
    """An error answered as JSON `{"error": ..., "message": ...}` with an HTTP status."""

    def __init__(
        self, status: int, error: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """Return the JSON body of the error."""
        return {**self.extra, "error": self.error, "message": self.message}


def invalid(message: str) -> ApiError:
    """Build a 400 validation error."""
    return ApiError(400, "validation_error", message)


def forbidden(message: str) -> ApiError:
    """Build a 403 permission error."""
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    """Build a 404 error."""
    return ApiError(404, "not_found", message)


def conflict(error: str, message: str) -> ApiError:
    """Build a 409 error (duplicate, quota, dependent objects)."""
    return ApiError(409, error, message)


@dataclass
class Account:
    """One account of any permission level."""

    username: str
    perm_level: str
    password_hash: str
    api_access: int = 1
    enabled: int = 1
    recovery_email: str = ""
    language: str = "en"
    last_login: int = 0
    otp: str | None = None
    domains: list[str] = field(default_factory=list)
    quota_domains: int = 0
    quota_domainaliases: int = 0
    quota_aliases: int = 0
    quota_mailboxes: int = 0
    storagequota_total: int = 0
    domain: str = ""
    storagequota_used: int = 0
    owner: str | None = None


@dataclass
class Zone:
    """A domain, relay domain or domain alias; they share one namespace of names."""

    kind: str
    name: str
    owner: str | None
    verified: bool
    verification_code: str
    expire_time: int
    destination_hostname: str = ""
    destination_port: int = 0
    rcpt_domain: str = ""

    @property
    def home(self) -> str:
        """The administered domain this zone belongs to."""
        return self.rcpt_domain if self.kind == "alias" else self.name


@dataclass
class Forwarder:
    """An alias (address -> recipients) or a sender address (address -> MailUsers)."""

    address: str
    targets: list[str]
    owner: str | None

    @property
    def home(self) -> str:
        """The domain part of the address."""
        return self.address.rsplit("@", 1)[1]


# kind -> (address key, list key, collection key)
FORWARDER_KEYS = {
    "alias": ("alias", "recipients", "aliases"),
    "sender": ("sender_address", "usernames", "sender_addresses"),
}


def join_list(values: Iterable[str]) -> str:
    """Render a list field as the comma+space separated string of the API."""
    return ", ".join(values)


def split_list(value: Any, key: str) -> list[str]:
    """Parse a comma-separated string field (or a list, for seeds) into unique items."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        raise invalid(f"{key} must be a comma-separated string")
    out: list[str] = []
    for part in (p.strip() for p in parts):
        if part and part not in out:
            out.append(part)
    return out


def _string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{key} must be a non-empty string")
    return value.strip()


def _flag(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or value not in (0, 1):
        raise invalid(f"{key} must be the integer 0 or 1")
    return int(value)


def _domain_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _DOMAIN_RE.match(value):
        raise invalid(f"{key} must be a lowercase domain name, got {value!r}")
    return value


def _email(value: Any, key: str, lowercase: bool = True) -> str:
    text = value.lower() if isinstance(value, str) and not lowercase else value
    if not isinstance(text, str) or text.count("@") != 1:
        raise invalid(f"{key} must be an e-mail address, got {value!r}")
    local, domain = text.split("@")
    if not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain):
        raise invalid(f"{key} must be a lowercase e-mail address, got {value!r}")
    return value


def _check_keys(body: Mapping[str, Any], required: Iterable[str], allowed: Iterable[str]) -> None:
    allowed_set = set(allowed)
    unknown = sorted(k for k in body if k not in allowed_set)
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(unknown)}")
    missing = [k for k in required if k not in body]
    if missing:
        raise invalid(f"missing required field(s): {', '.join(missing)}")


def _int_param(query: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"\d+", raw) or int(raw) < minimum:
        raise invalid(f"{key} must be an integer >= {minimum}")
    return int(raw)


def paginate(items: list[Any], query: Mapping[str, str]) -> list[Any]:
    """Apply `limit` (default and max 50) and `start` to a list."""
    limit = min(_int_param(query, "limit", PAGE_MAX, 1), PAGE_MAX)
    start = _int_param(query, "start", 0, 0)
    return items[start : start + limit]


def _search(query: Mapping[str, str]) -> str:
    return query.get("search", "").strip().lower()


def _verification_code() -> str:
    return "nms-domain-verification=" + "".join(secrets.choice("0123456789") for _ in range(12))


class State:
    """All NMS objects plus issued tokens."""

    def __init__(self, config: SimConfig, clock: SimClock) -> None:
        self.config = config
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.zones: dict[str, Zone] = {}
        self.forwarders: dict[str, dict[str, Forwarder]] = {"alias": {}, "sender": {}}
        self.tokens = TokenStore()

    # ----- helpers -------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now())

    def _unlimited(self, value: int) -> bool:
        if self.config.zero_unlimited and value == 0:
            return True  # profile zero-unlimited
        return (
            self.config.unlimited_sentinel is not None and value == self.config.unlimited_sentinel
        )

    def fold(self, name: str) -> str:
        """A username or e-mail as the server stores it (lower-cased by profile lowercase)."""
        return name.lower() if self.config.lowercase_names else name

    def _quota_value(self, body: Mapping[str, Any], key: str) -> int:
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"{key} must be an integer")
        if value < 0 and not self._unlimited(value):
            raise invalid(f"{key} must be an integer >= 0")
        return value

    def _password(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise invalid("password must be a non-empty string")
        if value.startswith("{"):
            if not is_sha512_crypt(value):
                raise invalid("a pre-hashed password must be {SHA512-CRYPT}$6$...")
            return value
        problem = password_problem(value)
        if problem:
            raise invalid(problem)
        return hash_password(value)

    def usage(self) -> dict[str, dict[str, int]]:
        """Return used quota per owning DomainAdmin, keyed by the quota field name."""
        used: dict[str, dict[str, int]] = {}

        def add(owner: str | None, key: str, amount: int = 1) -> None:
            if owner is not None:
                counters = used.setdefault(owner, dict.fromkeys(QUOTA_FIELDS, 0))
                counters[key] += amount

        for z in self.zones.values():
            if z.verified or self.config.count_pending:
                add(z.owner, "quota_domainaliases" if z.kind == "alias" else "quota_domains")
        for a in self.accounts.values():
            if a.perm_level == MAIL_USER:
                add(a.owner, "quota_mailboxes")
                add(a.owner, "storagequota_total", a.storagequota_total)
        for kind in self.forwarders:
            for f in self.forwarders[kind].values():
                add(f.owner, "quota_aliases")
        return used

    def _used(self, username: str) -> dict[str, int]:
        return self.usage().get(username, dict.fromkeys(QUOTA_FIELDS, 0))

    def _check_room(self, owner: str | None, key: str, amount: int) -> None:
        da = self.accounts.get(owner or "")
        if da is None or da.perm_level != DOMAIN_ADMIN or amount <= 0:
            return
        quota = getattr(da, key)
        if self._unlimited(quota):
            return
        used = self._used(da.username)[key]
        if used + amount > quota:
            raise conflict(
                "quota_exceeded",
                f"{key} of DomainAdmin {da.username} exceeded: {used} used of {quota}, "
                f"{amount} more requested",
            )

    def _administers(self, caller: Account, domain: str) -> bool:
        if caller.perm_level == MASTER:
            return True
        return caller.perm_level == DOMAIN_ADMIN and domain in caller.domains

    def _require_admin(self, caller: Account) -> None:
        if caller.perm_level == MAIL_USER:
            raise forbidden("a MailUser may not use this route")

    def _require_master(self, caller: Account) -> None:
        if caller.perm_level != MASTER:
            raise forbidden("this route requires a MasterAdmin")

    def _can_see(self, caller: Account, acct: Account) -> bool:
        if caller.perm_level == MASTER or acct.username == caller.username:
            return True
        return (
            caller.perm_level == DOMAIN_ADMIN
            and acct.perm_level == MAIL_USER
            and acct.domain in caller.domains
        )

    def _visible_account(self, caller: Account, username: str) -> Account:
        username = self.fold(username)
        acct = self.accounts.get(username)
        if acct is None:
            raise not_found(f"account {username} does not exist")
        if not self._can_see(caller, acct):
            raise forbidden(f"not allowed to access account {username}")
        return acct

    def _domainadmin(self, username: str) -> Account:
        username = self.fold(username)
        acct = self.accounts.get(username)
        if acct is None:
            raise not_found(f"account {username} does not exist")
        if acct.perm_level != DOMAIN_ADMIN:
            raise invalid(f"account {username} is not a DomainAdmin")
        return acct

    def _administered_list(self, value: Any, key: str, username: str) -> list[str]:
        names = split_list(value, key)
        for name in names:
            _domain_name(name, key)
            zone = self.zones.get(name)
            if zone is None or zone.kind == "alias":
                raise invalid(f"{key}: domain {name} does not exist")
            if self.config.exclusive_domains:
                for other in self.accounts.values():
                    if other.username != username and name in other.domains:
                        raise conflict(
                            "domain_taken", f"domain {name} is administered by {other.username}"
                        )
        return names

    def _mail_domain(self, caller: Account, domain: str, key: str) -> Zone:
        """Check that a domain can hold mailboxes/aliases for the caller."""
        zone = self.zones.get(domain)
        if zone is None or zone.kind != "domain":
            raise invalid(f"{key}: domain {domain} does not exist")
        if self.config.require_verified and not zone.verified:
            raise invalid(f"{key}: domain {domain} is pending verification")
        if not self._administers(caller, domain):
            raise forbidden(f"domain {domain} is not administered by {caller.username}")
        return zone

    def _owner_for(self, caller: Account) -> str | None:
        return caller.username if caller.perm_level == DOMAIN_ADMIN else None

    # ----- views -----------------------------------------------------------------------------

    def account_view(
        self,
        acct: Account,
        usage: dict[str, dict[str, int]] | None = None,
        full: bool = True,
        control: bool = False,
    ) -> dict[str, Any]:
        """Render an account as the API returns it (`control`: every field, for /_sim/state)."""
        out: dict[str, Any] = {
            "username": acct.username,
            "perm_level": acct.perm_level,
            "api_access": acct.api_access,
            "enabled": acct.enabled,
            "recovery_email": acct.recovery_email,
            "language": acct.language,
        }
        if full:
            out["last_login"] = acct.last_login
            out["password_hash"] = acct.password_hash
        if acct.perm_level == DOMAIN_ADMIN:
            used = (usage if usage is not None else self.usage()).get(acct.username, {})
            out["domains"] = join_list(acct.domains)
            for key in QUOTA_FIELDS:
                out[key] = getattr(acct, key)
                out[USED[key]] = used.get(key, 0)
        elif acct.perm_level == MAIL_USER:
            out["domain"] = acct.domain
            out["storagequota_total"] = acct.storagequota_total
            out["storagequota_used"] = acct.storagequota_used
        if not control and not self.config.usage_fields:  # profile no-usage
            out = {k: v for k, v in out.items() if not k.endswith("_used")}
        return out

    @staticmethod
    def zone_view(zone: Zone, created: bool = False) -> Any:
        """Render a zone for list (verified or pending) or create responses."""
        key = ZONE_KEYS[zone.kind]
        out: dict[str, Any] = {key: zone.name}
        if zone.kind == "relay":
            out["destination_hostname"] = zone.destination_hostname
            out["destination_port"] = zone.destination_port
        if zone.kind == "alias":
            out["rcpt_domain"] = zone.rcpt_domain
        if zone.verified and not created:
            return zone.name if zone.kind == "domain" else out
        out["expire_time"] = zone.expire_time
        out["verification_code"] = zone.verification_code
        if created:
            out["status"] = "verified" if zone.verified else "pending_verification"
            out["verification_type"] = "DNS TXT"
        return out

    # ----- accounts --------------------------------------------------------------------------

    def create_account(self, caller: Account, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /api/v1/accounts/."""
        self._require_admin(caller)
        perm = body.get("perm_level")
        if perm not in PERM_LEVELS:
            raise invalid(f"perm_level must be one of {', '.join(PERM_LEVELS)}")
        if caller.perm_level == DOMAIN_ADMIN and perm != MAIL_USER:
            raise forbidden("a DomainAdmin may only create MailUser accounts")
        extra = DA_FIELDS if perm == DOMAIN_ADMIN else MU_FIELDS if perm == MAIL_USER else ()
        fields = (*BASE_FIELDS, *extra)
        _check_keys(body, fields, fields)
        username = self.fold(_string(body, "username"))
        if perm == MAIL_USER:
            _email(username, "username")
        elif not _USERNAME_RE.match(username):
            raise invalid("username must be lowercase letters, digits and . _ + @ -")
        acct = Account(
            username=username,
            perm_level=perm,
            password_hash=self._password(body["password"]),
            api_access=_flag(body, "api_access"),
            enabled=_flag(body, "enabled"),
            recovery_email=self.fold(
                _email(_string(body, "recovery_email"), "recovery_email", False)
            ),
            language=self._language(body),
        )
        if perm == DOMAIN_ADMIN:
            for key in QUOTA_FIELDS:
                setattr(acct, key, self._quota_value(body, key))
        if perm == MAIL_USER:
            domain = _string(body, "domain")
            if username.rsplit("@", 1)[1] != domain:
                raise invalid("domain must be the domain part of the MailUser username")
            self._mail_domain(caller, domain, "domain")
            acct.domain = domain
            acct.storagequota_total = self._quota_value(body, "storagequota_total")
            acct.owner = self._owner_for(caller)
        if username in self.accounts:
            raise conflict("account_exists", f"account {username} already exists")
        if perm == MAIL_USER and username in self.forwarders["alias"]:
            raise conflict("address_taken", f"{username} is already an alias")
        if perm == DOMAIN_ADMIN:
            acct.domains = self._administered_list(body["domains"], "domains", username)
        if perm == MAIL_USER:
            self._check_room(acct.owner, "quota_mailboxes", 1)
            self._check_room(acct.owner, "storagequota_total", acct.storagequota_total)
        self.accounts[username] = acct
        return self.account_view(acct, full=False)

    @staticmethod
    def _language(body: Mapping[str, Any]) -> str:
        value = body.get("language")
        if not isinstance(value, str) or not _LANGUAGE_RE.match(value):
            raise invalid("language must be an ISO 639-1/639-2 code such as 'en'")
        return value

    def list_accounts(self, caller: Account, query: Mapping[str, str]) -> dict[str, Any]:
        """GET /api/v1/accounts/."""
        perm = query.get("perm_level")
        if perm is not None and perm not in PERM_LEVELS:
            raise invalid(f"perm_level must be one of {', '.join(PERM_LEVELS)}")
        flags: dict[str, int] = {}
        for key in ("enabled", "api_access"):
            if key in query:
                if query[key] not in ("0", "1"):
                    raise invalid(f"{key} must be 0 or 1")
                flags[key] = int(query[key])
        search = _search(query)
        rows = [
            a
            for a in self.accounts.values()
            if self._can_see(caller, a)
            and (perm is None or a.perm_level == perm)
            and all(getattr(a, k) == v for k, v in flags.items())
            and search in a.username.lower()
        ]
        usage = self.usage()
        return {"accounts": [self.account_view(a, usage) for a in paginate(rows, query)]}

    def get_account(self, caller: Account, username: str) -> dict[str, Any]:
        """GET /api/v1/accounts/<username>/."""
        return self.account_view(self._visible_account(caller, username))

    def patch_account(
        self, caller: Account, username: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PATCH /api/v1/accounts/<username>/; returns the updated fields."""
        target = self._visible_account(caller, username)
        if not body:
            raise invalid("at least one field to update is required")
        supported: tuple[str, ...] = PATCH_BASE
        if target.perm_level == DOMAIN_ADMIN:
            supported = (*PATCH_BASE, *DA_FIELDS)
        elif target.perm_level == MAIL_USER:
            supported = (*PATCH_BASE, "storagequota_total")
        unknown = sorted(set(body) - set(supported))
        if unknown:
            raise invalid(f"field(s) not supported for a {target.perm_level}: {', '.join(unknown)}")
        if target.username == caller.username:
            allowed: tuple[str, ...] = PATCH_SELF
        elif caller.perm_level in (MASTER, DOMAIN_ADMIN):
            allowed = supported  # visibility already limits a DomainAdmin to its MailUsers
        else:
            allowed = ()
        refused = sorted(set(body) - set(allowed))
        if refused:
            raise forbidden(f"not allowed to change {', '.join(refused)} of {username}")
        changes: dict[str, Any] = {}
        for key in body:
            if key == "password":
                changes["password_hash"] = self._password(body[key])
            elif key in ("api_access", "enabled"):
                changes[key] = _flag(body, key)
            elif key == "recovery_email":
                changes[key] = self.fold(_email(_string(body, key), key, False))
            elif key == "language":
                changes[key] = self._language(body)
            elif key == "domains":
                changes[key] = self._administered_list(body[key], key, target.username)
            else:
                changes[key] = self._quota_value(body, key)
        self._check_quota_change(target, changes)
        for key, value in changes.items():
            setattr(target, key, value)
        echo = {k: v for k, v in changes.items() if k != "password_hash"}
        if "domains" in echo:
            echo["domains"] = join_list(echo["domains"])
        return echo

    def _check_quota_change(self, target: Account, changes: dict[str, Any]) -> None:
        """Refuse a quota below usage unless switched off ("Quota below usage" in the README)."""
        reject = self.config.quota_below_usage == "reject"
        if target.perm_level == DOMAIN_ADMIN:
            used = self._used(target.username)
            for key in QUOTA_FIELDS:
                new = changes.get(key)
                if new is not None and reject and not self._unlimited(new) and new < used[key]:
                    raise conflict(
                        "quota_below_usage",
                        f"{key} of {target.username} cannot be lowered to {new}: "
                        f"{used[key]} in use",
                    )
        elif target.perm_level == MAIL_USER and "storagequota_total" in changes:
            new = changes["storagequota_total"]
            if reject and new < target.storagequota_used and not self._unlimited(new):
                raise conflict(
                    "quota_below_usage",
                    f"storagequota_total of {target.username} cannot be lowered to {new}: "
                    f"{target.storagequota_used} MB in use",
                )
            self._check_room(target.owner, "storagequota_total", new - target.storagequota_total)

    def delete_account(self, caller: Account, username: str) -> None:
        """DELETE /api/v1/accounts/<username>/."""
        target = self._visible_account(caller, username)
        if target.username == caller.username:
            raise forbidden("an account cannot delete itself")
        if caller.perm_level != MASTER and target.perm_level != MAIL_USER:
            raise forbidden(f"not allowed to delete {username}")
        if target.perm_level == DOMAIN_ADMIN and target.domains:
            raise conflict(
                "domainadmin_has_domains",
                f"DomainAdmin {username} still administers {join_list(target.domains)}; "
                "empty its domains or use the cascade delete route",
            )
        self._remove_account(target)

    def _remove_account(self, target: Account) -> None:
        del self.accounts[target.username]
        self.tokens.drop_user(target.username)
        if target.perm_level == MAIL_USER:
            for sender in self.forwarders["sender"].values():
                if target.username in sender.targets:
                    sender.targets.remove(target.username)
        if target.perm_level == DOMAIN_ADMIN:
            for obj in self._owned_objects(target.username):
                obj.owner = None

    def _owned_objects(self, owner: str) -> list[Account | Zone | Forwarder]:
        objs: list[Account | Zone | Forwarder] = [
            *self.zones.values(),
            *self.accounts.values(),
            *self.forwarders["alias"].values(),
            *self.forwarders["sender"].values(),
        ]
        return [o for o in objs if o.owner == owner]

    def _dependents(self, domains: set[str]) -> list[Account | Zone | Forwarder]:
        """Everything that lives under a set of administered domains."""
        out: list[Account | Zone | Forwarder] = [
            z for z in self.zones.values() if z.home in domains
        ]
        out += [
            a for a in self.accounts.values() if a.perm_level == MAIL_USER and a.domain in domains
        ]
        for kind in self.forwarders:
            out += [f for f in self.forwarders[kind].values() if f.home in domains]
        return out

    def cascade_set_enabled(self, caller: Account, username: str, enabled: int) -> None:
        """PATCH .../cascade/domainadmin/<username>/<enable|disable>/.

        See "Cascade enable and disable" in nmsim/README.md: no memory of earlier states.
        """
        self._require_master(caller)
        da = self._domainadmin(username)
        da.enabled = enabled
        for acct in self.accounts.values():
            if acct.perm_level == MAIL_USER and acct.domain in da.domains:
                acct.enabled = enabled

    def cascade_delete(self, caller: Account, username: str) -> None:
        """DELETE .../cascade/domainadmin/<username>/: the DomainAdmin and its dependents.

        See "Cascade delete" in nmsim/README.md; `cascade_delete_domains: false` keeps domains.
        """
        self._require_master(caller)
        da = self._domainadmin(username)
        domains = set(da.domains)
        for obj in self._dependents(domains):
            if isinstance(obj, Account):
                self._remove_account(obj)
            elif self.config.cascade_delete_domains:
                self._remove_object(obj)
        self._remove_account(da)

    def _remove_object(self, obj: Zone | Forwarder) -> None:
        if isinstance(obj, Zone):
            self.zones.pop(obj.name, None)
            for acct in self.accounts.values():
                if obj.name in acct.domains:
                    acct.domains.remove(obj.name)
        else:
            for kind in self.forwarders:
                if self.forwarders[kind].get(obj.address) is obj:
                    del self.forwarders[kind][obj.address]

    def transfer(self, caller: Account, username: str) -> None:
        """POST .../cascade/ownership/domainadmin/<username>/: take over everything under it.

        See "Ownership transfer" in nmsim/README.md; `quota_below_usage` decides overfilling.
        """
        self._require_master(caller)
        da = self._domainadmin(username)
        moving = [o for o in self._dependents(set(da.domains)) if o.owner != da.username]
        if self.config.quota_below_usage == "reject":
            extra = dict.fromkeys(QUOTA_FIELDS, 0)
            for obj in moving:
                if isinstance(obj, Zone):
                    if obj.verified or self.config.count_pending:
                        extra[
                            "quota_domainaliases" if obj.kind == "alias" else "quota_domains"
                        ] += 1
                elif isinstance(obj, Account):
                    extra["quota_mailboxes"] += 1
                    extra["storagequota_total"] += obj.storagequota_total
                else:
                    extra["quota_aliases"] += 1
            for key, amount in extra.items():
                self._check_room(da.username, key, amount)
        for obj in moving:
            obj.owner = da.username

    # ----- domains, relay domains, domain aliases ------------------------------------------------

    def create_zone(self, caller: Account, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /api/v1/domains/, /relaydomains/ or /domainaliases/."""
        self._require_admin(caller)
        key = ZONE_KEYS[kind]
        fields = {
            "domain": ("domain",),
            "relay": ("relay_domain", "destination_hostname", "destination_port"),
            "alias": ("domain_alias", "rcpt_domain"),
        }[kind]
        _check_keys(body, fields, fields)
        name = _domain_name(body[key], key)
        zone = Zone(
            kind=kind,
            name=name,
            owner=self._owner_for(caller),
            verified=False,
            verification_code=_verification_code(),
            expire_time=self._now() + self.config.verification_ttl,
        )
        if kind == "relay":
            zone.destination_hostname = _domain_name(
                body["destination_hostname"], "destination_hostname"
            )
            port = body["destination_port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise invalid("destination_port must be an integer between 1 and 65535")
            zone.destination_port = port
        if kind == "alias":
            rcpt = _domain_name(body["rcpt_domain"], "rcpt_domain")
            self._mail_domain(caller, rcpt, "rcpt_domain")
            zone.rcpt_domain = rcpt
        if name in self.zones:
            raise conflict("domain_exists", f"{name} already exists")
        if self.config.count_pending:
            quota = "quota_domainaliases" if kind == "alias" else "quota_domains"
            self._check_room(zone.owner, quota, 1)
        self.zones[name] = zone
        if caller.perm_level == DOMAIN_ADMIN and kind != "alias":
            caller.domains.append(name)
        return self.zone_view(zone, created=True)

    def list_zones(self, caller: Account, kind: str) -> dict[str, Any]:
        """GET /api/v1/domains/, /relaydomains/ or /domainaliases/."""
        self._require_admin(caller)
        collection = {"domain": "domains", "relay": "relay_domains", "alias": "domain_aliases"}[
            kind
        ]
        zones = [
            z for z in self.zones.values() if z.kind == kind and self._administers(caller, z.home)
        ]
        return {
            collection: [self.zone_view(z) for z in zones if z.verified],
            collection + "_pending_verification": [
                self.zone_view(z) for z in zones if not z.verified
            ],
        }

    def delete_zone(self, caller: Account, kind: str, body: Mapping[str, Any]) -> None:
        """DELETE /api/v1/domains/, /relaydomains/ or /domainaliases/ (key in the JSON body)."""
        self._require_admin(caller)
        key = ZONE_KEYS[kind]
        _check_keys(body, (key,), (key,))
        name = _domain_name(body[key], key)
        zone = self.zones.get(name)
        if zone is None or zone.kind != kind:
            raise not_found(f"{ZONE_NOUNS[kind]} {name} does not exist")
        if not self._administers(caller, zone.home):
            raise forbidden(f"{name} is not administered by {caller.username}")
        if kind == "domain":
            users = [o for o in self._dependents({name}) if o is not zone]
            if users:
                raise conflict(
                    "domain_not_empty",
                    f"domain {name} still has {len(users)} mailbox(es), alias(es), sender "
                    "address(es) or domain alias(es)",
                )
        self._remove_object(zone)

    def verify(self, names: list[str] | None) -> list[str]:
        """Mark zones verified (all pending ones when names is None)."""
        if names is None:
            names = [z.name for z in self.zones.values() if not z.verified]
        for name in names:
            if name not in self.zones:
                raise not_found(f"{name} does not exist")
        for name in names:
            self.zones[name].verified = True
        return names

    # ----- aliases and sender addresses --------------------------------------------------------

    def _forwarder_input(
        self, caller: Account, kind: str, body: Mapping[str, Any]
    ) -> tuple[str, list[str]]:
        addr_key, list_key, _ = FORWARDER_KEYS[kind]
        _check_keys(body, (addr_key, list_key), (addr_key, list_key))
        address = _email(_string(body, addr_key), addr_key)
        self._mail_domain(caller, address.rsplit("@", 1)[1], addr_key)
        targets = split_list(body[list_key], list_key)
        if not targets:
            raise invalid(f"{list_key} must list at least one address")
        for target in targets:
            if kind == "alias":
                _email(target, list_key, False)
                continue
            acct = self.accounts.get(target)
            if acct is None or acct.perm_level != MAIL_USER:
                raise invalid(f"{list_key}: {target} is not a MailUser")
            if not self._can_see(caller, acct):
                raise forbidden(f"MailUser {target} is not administered by {caller.username}")
        return address, targets

    def _forwarder_view(self, kind: str, fwd: Forwarder) -> dict[str, str]:
        addr_key, list_key, _ = FORWARDER_KEYS[kind]
        return {addr_key: fwd.address, list_key: join_list(fwd.targets)}

    def create_forwarder(
        self, caller: Account, kind: str, body: Mapping[str, Any]
    ) -> dict[str, str]:
        """POST /api/v1/aliases/ or /api/v1/sender_addresses/."""
        self._require_admin(caller)
        address, targets = self._forwarder_input(caller, kind, body)
        if address in self.forwarders[kind]:
            raise conflict("address_exists", f"{address} already exists")
        if kind == "alias" and address in self.accounts:
            raise conflict("address_taken", f"{address} is already a mailbox")
        owner = self._owner_for(caller)
        self._check_room(owner, "quota_aliases", 1)
        fwd = Forwarder(address, targets, owner)
        self.forwarders[kind][address] = fwd
        return self._forwarder_view(kind, fwd)

    def _existing_forwarder(self, caller: Account, kind: str, address: str) -> Forwarder:
        fwd = self.forwarders[kind].get(address)
        noun = "alias" if kind == "alias" else "sender address"
        if fwd is None:
            raise not_found(f"{noun} {address} does not exist")
        if not self._administers(caller, fwd.home):
            raise forbidden(f"{noun} {address} is not administered by {caller.username}")
        return fwd

    def put_forwarder(self, caller: Account, kind: str, body: Mapping[str, Any]) -> dict[str, str]:
        """PUT /api/v1/aliases/ or /api/v1/sender_addresses/: replace the target list."""
        self._require_admin(caller)
        addr_key, list_key, _ = FORWARDER_KEYS[kind]
        _check_keys(body, (addr_key, list_key), (addr_key, list_key))
        fwd = self._existing_forwarder(caller, kind, _email(_string(body, addr_key), addr_key))
        _, targets = self._forwarder_input(caller, kind, body)
        fwd.targets = targets
        return self._forwarder_view(kind, fwd)

    def delete_forwarder(self, caller: Account, kind: str, body: Mapping[str, Any]) -> None:
        """DELETE /api/v1/aliases/ or /api/v1/sender_addresses/ (address in the JSON body)."""
        self._require_admin(caller)
        addr_key = FORWARDER_KEYS[kind][0]
        _check_keys(body, (addr_key,), (addr_key,))
        address = _email(_string(body, addr_key), addr_key)
        fwd = self._existing_forwarder(caller, kind, address)
        del self.forwarders[kind][fwd.address]

    def list_forwarders(
        self, caller: Account, kind: str, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """GET /api/v1/aliases/ or /api/v1/sender_addresses/."""
        self._require_admin(caller)
        search = _search(query)
        rows = [
            f
            for f in self.forwarders[kind].values()
            if self._administers(caller, f.home) and search in f.address
        ]
        collection = FORWARDER_KEYS[kind][2]
        return {collection: [self._forwarder_view(kind, f) for f in paginate(rows, query)]}

    # ----- statistics ------------------------------------------------------------------------

    def quota_stats(self, caller: Account, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v1/stats/quota/: storage per administered account, fullest first."""
        self._require_admin(caller)
        perm = query.get("perm_level")
        allowed = (DOMAIN_ADMIN, MAIL_USER) if caller.perm_level == MASTER else (MAIL_USER,)
        if perm is not None and perm not in allowed:
            raise invalid(f"perm_level must be one of {', '.join(allowed)} for this caller")
        levels = (perm,) if perm else allowed
        usage = self.usage()
        search = _search(query)
        rows = []
        for acct in self.accounts.values():
            if acct.perm_level not in levels or acct.username == caller.username:
                continue
            if not self._can_see(caller, acct) or search not in acct.username.lower():
                continue
            total = acct.storagequota_total
            if acct.perm_level == DOMAIN_ADMIN:
                used = usage.get(acct.username, {}).get("storagequota_total", 0)
            else:
                used = acct.storagequota_used
            rows.append(
                {
                    "username": acct.username,
                    "storagequota_total": total,
                    "storagequota_used": used,
                    "use_percent": used * 100 // total if total > 0 else 0,
                }
            )
        rows.sort(key=lambda r: (-r["use_percent"], r["username"]))
        if not self.config.usage_fields:  # profile no-usage
            for row in rows:
                del row["storagequota_used"]
        return paginate(rows, query)

    def mail_stats(self, caller: Account) -> dict[str, Any]:
        """GET /api/v1/stats/mail/ (MasterAdmin only)."""
        self._require_master(caller)
        kinds = [z.kind for z in self.zones.values()]
        usage = self.usage()
        return {
            "domains": kinds.count("domain"),
            "domain_aliases": kinds.count("alias"),
            "relay_domains": kinds.count("relay"),
            "mailboxes": sum(a.perm_level == MAIL_USER for a in self.accounts.values()),
            "aliases": len(self.forwarders["alias"]),
            "sender_addresses": len(self.forwarders["sender"]),
            "addressbooks": 0,
            "calendars": 0,
            "sieve_filters": 0,
            "domainadmin_usage": [
                {
                    a.username: sum(
                        v for k, v in usage.get(a.username, {}).items() if k != "storagequota_total"
                    )
                }
                for a in self.accounts.values()
                if a.perm_level == DOMAIN_ADMIN
            ],
        }

    # ----- seed and dump -----------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Return the whole state in the seed format, plus computed fields."""
        usage = self.usage()
        accounts = []
        for acct in self.accounts.values():
            row = self.account_view(acct, usage, control=True)
            row["otp"] = acct.otp
            if acct.perm_level == MAIL_USER:
                row["owner"] = acct.owner
            accounts.append(row)
        zones: dict[str, list[dict[str, Any]]] = {
            "domains": [],
            "relay_domains": [],
            "domain_aliases": [],
        }
        for z in self.zones.values():
            row = self.zone_view(z, created=True)
            row.pop("status")
            row.pop("verification_type")
            row["verified"] = z.verified
            row["owner"] = z.owner
            zones[
                {"domain": "domains", "relay": "relay_domains", "alias": "domain_aliases"}[z.kind]
            ].append(row)
        out: dict[str, Any] = {"accounts": accounts, **zones}
        for kind, (_, _, collection) in FORWARDER_KEYS.items():
            out[collection] = [
                {**self._forwarder_view(kind, f), "owner": f.owner}
                for f in self.forwarders[kind].values()
            ]
        out["tokens"] = [
            {"username": t.username, "valid_from": t.valid_from, "valid_to": t.valid_to}
            for t in self.tokens.tokens.values()
        ]
        return out

    def seed(self, data: Mapping[str, Any]) -> dict[str, int]:
        """Add objects without permission or quota checks; all or nothing."""
        if not isinstance(data, Mapping):
            raise invalid("seed must be a JSON object")
        known = {
            "accounts",
            "domains",
            "relay_domains",
            "domain_aliases",
            "aliases",
            "sender_addresses",
            "tokens",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise invalid(f"unknown seed section(s): {', '.join(unknown)}")
        saved = copy.deepcopy((self.accounts, self.zones, self.forwarders))
        try:
            return _Seeder(self).run(data)
        except ApiError:
            self.accounts, self.zones, self.forwarders = saved
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.accounts, self.zones, self.forwarders = saved
            raise invalid(f"bad seed data: {exc!r}") from exc


_AUTO = object()
_SEED_PASSWORD = "Sim-Seed-Passw0rd"
_seed_hash_cache: list[str] = []


def _seed_default_hash() -> str:
    if not _seed_hash_cache:
        _seed_hash_cache.append(hash_password(_SEED_PASSWORD))
    return _seed_hash_cache[0]


def _rows(data: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    rows = data.get(section, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise invalid(f"seed section {section} must be a list of objects")
    return rows


class _Seeder:
    """Applies one seed document to a State."""

    ZONE_SECTIONS = {"domain": "domains", "relay": "relay_domains", "alias": "domain_aliases"}
    ZONE_FIELDS = {"owner", "verified", "verification_code", "expire_time"}
    ACCOUNT_FIELDS = {
        *BASE_FIELDS,
        *DA_FIELDS,
        *MU_FIELDS,
        "password_hash",
        "last_login",
        "otp",
        "storagequota_used",
        "owner",
    }
    IGNORED = {*USED.values()}

    def __init__(self, state: State) -> None:
        self.state = state
        self.pending_owner: list[tuple[Account | Zone | Forwarder, Any]] = []

    def run(self, data: Mapping[str, Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind in ("domain", "relay", "alias"):
            section = self.ZONE_SECTIONS[kind]
            for row in _rows(data, section):
                self.zone(kind, row)
            counts[section] = len(_rows(data, section))
        accounts = _rows(data, "accounts")
        for row in sorted(accounts, key=lambda r: r.get("perm_level") == MAIL_USER):
            self.account(row)
        counts["accounts"] = len(accounts)
        for kind, (_, _, collection) in FORWARDER_KEYS.items():
            for row in _rows(data, collection):
                self.forwarder(kind, row)
            counts[collection] = len(_rows(data, collection))
        for obj, owner in self.pending_owner:
            obj.owner = self.owner(obj, owner)
        return counts

    def owner(self, obj: Account | Zone | Forwarder, owner: Any) -> str | None:
        home = obj.domain if isinstance(obj, Account) else obj.home
        if owner is _AUTO:
            admins = [
                a.username
                for a in self.state.accounts.values()
                if a.perm_level == DOMAIN_ADMIN and home in a.domains
            ]
            return admins[0] if len(admins) == 1 else None
        if owner is None:
            return None
        acct = self.state.accounts.get(owner)
        if acct is None or acct.perm_level != DOMAIN_ADMIN:
            raise invalid(f"seed owner {owner!r} is not a DomainAdmin")
        return str(owner)

    def zone(self, kind: str, row: dict[str, Any]) -> None:
        key = ZONE_KEYS[kind]
        extra = {"relay": {"destination_hostname", "destination_port"}, "alias": {"rcpt_domain"}}
        _check_keys(row, (key,), {key, *self.ZONE_FIELDS, *extra.get(kind, ())})
        name = _domain_name(row[key], key)
        if name in self.state.zones:
            raise conflict("domain_exists", f"{name} already exists")
        zone = Zone(
            kind=kind,
            name=name,
            owner=None,
            verified=bool(row.get("verified", True)),
            verification_code=row.get("verification_code") or _verification_code(),
            expire_time=int(
                row.get("expire_time", self.state._now() + self.state.config.verification_ttl)
            ),
            destination_hostname=row.get("destination_hostname", "mx.example.net"),
            destination_port=int(row.get("destination_port", 25)),
            rcpt_domain=row.get("rcpt_domain", ""),
        )
        if kind == "alias":
            target = self.state.zones.get(_domain_name(zone.rcpt_domain, "rcpt_domain"))
            if target is None or target.kind != "domain":
                raise invalid(f"rcpt_domain {zone.rcpt_domain} is not a seeded domain")
        self.state.zones[name] = zone
        self.pending_owner.append((zone, row.get("owner", _AUTO)))

    def account(self, row: dict[str, Any]) -> None:
        _check_keys(row, ("username", "perm_level"), self.ACCOUNT_FIELDS | self.IGNORED)
        perm = row["perm_level"]
        if perm not in PERM_LEVELS:
            raise invalid(f"perm_level must be one of {', '.join(PERM_LEVELS)}")
        username = _string(row, "username")
        if username in self.state.accounts:
            raise conflict("account_exists", f"account {username} already exists")
        if "password" in row:
            password_hash = self.state._password(row["password"])
        elif "password_hash" in row:
            password_hash = self.state._password(row["password_hash"])
        else:
            password_hash = _seed_default_hash()
        acct = Account(
            username=username,
            perm_level=perm,
            password_hash=password_hash,
            api_access=_flag(row, "api_access") if "api_access" in row else 1,
            enabled=_flag(row, "enabled") if "enabled" in row else 1,
            recovery_email=row.get("recovery_email", "recovery@example.com"),
            language=row.get("language", "en"),
            last_login=int(row.get("last_login", 0)),
            otp=row.get("otp"),
        )
        if perm == DOMAIN_ADMIN:
            acct.domains = self.state._administered_list(
                row.get("domains", ""), "domains", username
            )
            for key in QUOTA_FIELDS:
                setattr(acct, key, self.state._quota_value(row, key) if key in row else 0)
        if perm == MAIL_USER:
            _email(username, "username")
            acct.domain = row.get("domain", username.rsplit("@", 1)[1])
            zone = self.state.zones.get(acct.domain)
            if zone is None or zone.kind != "domain":
                raise invalid(f"MailUser {username}: domain {acct.domain} is not seeded")
            for key in ("storagequota_total", "storagequota_used"):
                setattr(acct, key, self.state._quota_value(row, key) if key in row else 0)
            self.pending_owner.append((acct, row.get("owner", _AUTO)))
        self.state.accounts[username] = acct

    def forwarder(self, kind: str, row: dict[str, Any]) -> None:
        addr_key, list_key, _ = FORWARDER_KEYS[kind]
        _check_keys(row, (addr_key, list_key), (addr_key, list_key, "owner"))
        address = _email(_string(row, addr_key), addr_key)
        if address in self.state.forwarders[kind]:
            raise conflict("address_exists", f"{address} already exists")
        zone = self.state.zones.get(address.rsplit("@", 1)[1])
        if zone is None or zone.kind != "domain":
            raise invalid(f"{address}: domain is not seeded")
        fwd = Forwarder(address, split_list(row[list_key], list_key), None)
        self.state.forwarders[kind][address] = fwd
        self.pending_owner.append((fwd, row.get("owner", _AUTO)))
