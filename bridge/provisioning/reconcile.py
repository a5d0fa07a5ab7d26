"""Desired vs actual -> the fewest calls that make the mail server match.

See docs/design.md#reconciliation.

`plan()` is pure: it compares a service's desired state with the DomainAdmin read from the
server and lists the steps. `execute()` runs them through the client. A service already in
its desired state plans nothing, so a reconcile of it makes no write call.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge.lifecycle import ServiceState
from bridge.mailserver import (
    Account,
    DomainAdmin,
    MailServerClient,
    PermanentError,
    TransientError,
)
from bridge.mailserver.client import QUOTA_FIELDS, join_list
from bridge.passwords import check_and_hash

USAGE_WORDS = {
    "domains": "domains (incl. relay domains)",
    "domain_aliases": "domain aliases",
    "aliases": "aliases (incl. sender addresses)",
    "mailboxes": "mailboxes",
    "storage_mb": "storage MB",
}


@dataclass(frozen=True)
class Desired:
    """A snapshot of one service's desired state, taken in a short transaction."""

    service_id: int
    source: str
    service_ref: str
    generation: int
    username: str | None
    state: ServiceState | None
    limits: dict[str, int] | None
    password_hash: str | None
    password_pending: bool
    recovery_email: str | None
    delete_at: datetime | None
    #: Bound to `username` (created, adopted, imported or linked): ours to change.
    bound: bool
    #: A create event was absorbed: an unbound service may create or adopt its account.
    create_requested: bool
    suspended_accounts: tuple[str, ...] | None
    transfer_to_username: str | None = None
    transfer_to_ref: str | None = None
    transfer_to_bound: bool = False
    created_as_email: str | None = None
    #: Why the package (`limits`) cannot be applied, e.g. quota_zero_ambiguous.
    package_blocked: PermanentError | None = None


@dataclass(frozen=True)
class Difference:
    """One field where the server differs from what billing says."""

    field: str
    desired: Any
    actual: Any


@dataclass(frozen=True)
class Step:
    """One thing to do, in order."""

    kind: str
    detail: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What a reconcile will do, and the drift it corrects."""

    steps: list[Step] = field(default_factory=list)
    drift: list[Difference] = field(default_factory=list)
    due_at: datetime | None = None
    note: str = ""
    #: Parts of the desired state that cannot be applied, by aspect (e.g. "package").
    blocked: dict[str, PermanentError] = field(default_factory=dict)
    #: How this reconcile binds an unbound service once it succeeds: created or adopted.
    binds: str | None = None
    #: The pending password hash needs no call: the server already has it, or the account is
    #: gone. Like a sent one, it is erased once the reconcile succeeds.
    password_done: bool = False

    def add(self, kind: str, detail: str, **args: Any) -> None:
        """Append a step."""
        self.steps.append(Step(kind, detail, args))


def plan(
    desired: Desired,
    actual: DomainAdmin | Account | None,
    now: datetime,
    target: DomainAdmin | Account | None = None,
) -> Plan:
    """Compare and list the steps; raise PermanentError when no step can make it right."""
    result = Plan()
    if desired.username is None:
        raise PermanentError(
            "not_provisioned",
            "no username is known for this service: the billing system has not sent a create",
        )
    if not desired.bound and not desired.create_requested:
        raise not_linked(desired.source, desired.service_ref, desired.username)
    if isinstance(actual, Account):
        raise PermanentError(
            "username_taken",
            f'"{desired.username}" exists on the mail server as a {actual.perm_level}, not a '
            "DomainAdmin; choose another username in the billing system",
        )
    state = desired.state
    if actual is None:
        if state is ServiceState.TERMINATED or state is None:
            if state is None:
                raise PermanentError(
                    "not_provisioned",
                    f'DomainAdmin "{desired.username}" does not exist and the billing system '
                    "has not sent a create for this service",
                )
            result.note = "terminated; the DomainAdmin is gone"
            result.password_done = True
            return result
        if desired.limits is None:
            if desired.package_blocked is not None:
                raise desired.package_blocked
            raise PermanentError("no_bundle", "the service has no product to size it by")
        result.drift.append(Difference("exists", True, False))
        result.add("create", f'create DomainAdmin "{desired.username}"')
        result.binds = None if desired.bound else "created"
        if state is ServiceState.SUSPENDED:
            result.add("disable", "disable it (the service is suspended)", remember=False)
        return result

    if not desired.bound:
        # A create may adopt an existing account only when it is the client's own.
        ours = {e.lower() for e in (desired.recovery_email, desired.created_as_email) if e}
        if actual.recovery_email.lower() not in ours:
            raise PermanentError(
                "username_taken",
                f'a DomainAdmin "{desired.username}" already exists and its recovery e-mail '
                "does not match this client; it belongs to someone else (or link it: "
                f"`bridge services link {desired.source} {desired.service_ref} "
                f"{desired.username}`)",
            )
        result.binds = "adopted"

    if state is ServiceState.TERMINATED:
        delete_at = desired.delete_at or now
        if now >= delete_at:
            result.drift.append(Difference("exists", False, True))
            result.add(
                "delete",
                f'delete DomainAdmin "{desired.username}" and its mail',
                domains=actual.domains,
            )
            return result
        result.due_at = delete_at
        result.note = f"deletion after the grace period, at {delete_at.isoformat()}"
        if actual.enabled:
            result.drift.append(Difference("enabled", False, True))
            result.add(
                "disable", "disable it until the deletion", remember=True, domains=actual.domains
            )
        return result

    if desired.limits is not None:
        changes = {b: v for b, v in desired.limits.items() if actual.limits.get(b) != v}
        for b, v in changes.items():
            result.drift.append(Difference(b, v, actual.limits.get(b)))
        if changes:
            blocked = _below_usage(actual, changes)
            if blocked is not None:
                # Blocks only the package; suspend, password and the rest still go ahead.
                result.blocked["package"] = blocked
                changes = {}
    elif desired.package_blocked is not None:
        result.blocked["package"] = desired.package_blocked
        changes = {}
    else:
        changes = {}
    # Quotas, recovery e-mail and password go in one PATCH: the fewest calls.
    fields: dict[str, Any] = {QUOTA_FIELDS[b][0]: v for b, v in changes.items()}
    said = [f"{b} {actual.limits.get(b)} -> {v}" for b, v in changes.items()]
    # Compared without letter case: a server that lower-cases e-mails must not cost a PATCH
    # on every reconcile.
    if desired.recovery_email and not same(actual.recovery_email, desired.recovery_email):
        result.drift.append(
            Difference("recovery_email", desired.recovery_email, actual.recovery_email)
        )
        fields["recovery_email"] = desired.recovery_email
        said.append(f"recovery e-mail -> {desired.recovery_email}")
    if desired.password_pending and desired.password_hash:
        if actual.password_hash != desired.password_hash:
            result.drift.append(Difference("password", "(new from billing)", "(older)"))
            fields["password"] = desired.password_hash
            said.append("password from billing (as a SHA512-crypt hash)")
        else:
            result.password_done = True
    if fields:
        result.add("update", "set " + ", ".join(said), fields=fields)

    if desired.transfer_to_ref is not None:
        _plan_transfer(desired, actual, target, result)

    if state is ServiceState.SUSPENDED and actual.enabled:
        result.drift.append(Difference("enabled", False, True))
        result.add(
            "disable",
            "suspend: remember enabled mailboxes, then disable all",
            remember=True,
            domains=actual.domains,
        )
    elif state is ServiceState.ACTIVE and not actual.enabled:
        result.drift.append(Difference("enabled", True, False))
        result.add(
            "enable",
            "unsuspend: enable, then keep disabled what was disabled before",
            domains=actual.domains,
        )
    return result


def _below_usage(actual: DomainAdmin, changes: dict[str, int]) -> PermanentError | None:
    """Refuse new limits below usage, and lowered limits whose usage the server does not
    report (a missing `*_used` field is unknown, not 0)."""
    below = [
        f"{USAGE_WORDS[b]}: {actual.used[b]} in use, new limit {v}"
        for b, v in changes.items()
        if b in actual.used and actual.used[b] > v
    ]
    if below:
        return PermanentError(
            "quota_below_usage",
            "the new bundle is below what the customer uses: " + "; ".join(below),
        )
    unknown = [
        f"{USAGE_WORDS[b]} (limit {actual.limits.get(b)} -> {v})"
        for b, v in changes.items()
        if b not in actual.used and v < actual.limits.get(b, 0)
    ]
    if unknown:
        return PermanentError(
            "usage_unknown",
            "the mail server does not report the usage of "
            + "; ".join(unknown)
            + ", so the bridge cannot tell whether the smaller bundle fits; check the usage "
            "in the NMS, then change the package there or keep the bigger one",
        )
    return None


def not_linked(source: str, service_ref: str, username: str | None) -> PermanentError:
    """The refusal for a service the bridge may not touch: it never created, adopted,
    imported or was told to link an account for it."""
    name = f' (the event names "{username}")' if username else ""
    return PermanentError(
        "not_linked",
        f"service {source}:{service_ref} is not linked to a DomainAdmin{name}, so the bridge "
        "changes nothing: it acts only on accounts it created, adopted on a create, imported "
        f"or was told to link. Link it on the service page or with `bridge services link "
        f"{source} {service_ref} USERNAME`, then retry",
    )


def same(a: str | None, b: str | None) -> bool:
    """Usernames, e-mails and domain names are equal whatever their letter case."""
    return (a or "").casefold() == (b or "").casefold()


def _plan_transfer(desired: Desired, actual: DomainAdmin, target: Any, result: Plan) -> None:
    if not desired.transfer_to_bound:
        raise PermanentError(
            "not_linked",
            f"the receiving service {desired.source}:{desired.transfer_to_ref} is not linked "
            "to a DomainAdmin; link it first (service page or `bridge services link`), then "
            "retry",
        )
    if not isinstance(target, DomainAdmin):
        raise PermanentError(
            "transfer_target_unknown",
            f"service {desired.transfer_to_ref} has no DomainAdmin on the mail server to "
            "receive the ownership",
        )
    moving = actual.domains
    owns_something = any(actual.used.get(b, 0) for b in QUOTA_FIELDS if b != "storage_mb")
    if not moving and not owns_something:
        result.add("transfer_done", "nothing left to transfer")
        return
    # The receiver takes over the giver's usage: refuse before any write when it lacks room.
    short = [
        f"{USAGE_WORDS[b]}: {target.used.get(b, 0) or 0} in use + {actual.used.get(b, 0) or 0} "
        f"moving > limit {target.limits.get(b, 0)}"
        for b in QUOTA_FIELDS
        if (target.used.get(b, 0) or 0) + (actual.used.get(b, 0) or 0) > target.limits.get(b, 0)
        and (actual.used.get(b, 0) or 0) > 0
    ]
    if short:
        raise PermanentError(
            "transfer_over_quota",
            f'the receiving DomainAdmin "{target.username}" lacks room for what '
            f'"{actual.username}" owns ({"; ".join(short)}); raise the receiving service\'s '
            "bundle first, then retry",
        )
    known = {d.casefold() for d in target.domains}
    result.drift.append(Difference("owner_of_domains", target.username, actual.username))
    result.add(
        "transfer",
        f"move {', '.join(moving) or 'remaining objects'} to {target.username} and transfer "
        "their ownership",
        target=target.username,
        target_domains=(*target.domains, *(d for d in moving if d.casefold() not in known)),
        target_before=target.domains,
        moving=moving,
        owned=owns_something,
    )


def random_password_hash() -> str:
    """For a create without a password (Blesta): a strong random one, kept only as a hash."""
    return check_and_hash(secrets.token_urlsafe(18) + "Aa1")


def execute(
    desired: Desired,
    steps: list[Step],
    client: MailServerClient,
    remember: Callable[[str, Any], None],
) -> dict[str, Any]:
    """Run the steps in order; return what the service row must record afterwards.
    `remember(column, value)` stores a fact on the service row at once, before the call
    that makes it true, so a crash right after the call cannot lose it."""
    record: dict[str, Any] = {}
    username = desired.username
    assert username is not None
    for step in steps:
        if step.kind == "create":
            remember("created_as_email", desired.recovery_email or "")
            client.create_domainadmin(
                username,
                desired.password_hash or random_password_hash(),
                desired.recovery_email or "",
                desired.limits or {},
            )
            record["password_applied"] = True
        elif step.kind == "update":
            client.update_account(username, step.args["fields"])
            if "password" in step.args["fields"]:
                record["password_applied"] = True
        elif step.kind == "disable":
            if step.args.get("remember"):
                users = client.list_mailusers(step.args["domains"])
                enabled = [u.username for u in users if u.enabled]
                remember("suspended_accounts", enabled)
                record["suspended_accounts"] = enabled
            client.cascade(username, "disable")
        elif step.kind == "enable":
            client.cascade(username, "enable")
            memory = desired.suspended_accounts
            if memory is not None:
                keep = set(memory)
                for user in client.list_mailusers(step.args["domains"]):
                    if user.enabled and user.username not in keep:
                        client.update_account(user.username, {"enabled": 0})
            record["suspended_accounts"] = None
        elif step.kind == "delete":
            try:
                client.delete_domainadmin(username)
            except PermanentError as exc:
                if exc.status not in (404, 405):
                    raise
                # The account was just read, so a 404 here means the route is missing.
                delete_step_by_step(client, username, step.args.get("domains", ()))
            record["deleted"] = True
        elif step.kind == "transfer":
            _transfer(client, username, step.args)
            record["transfer_done"] = True
        elif step.kind == "transfer_done":
            record["transfer_done"] = True
        else:  # pragma: no cover - plan() makes only the kinds above
            raise ValueError(step.kind)
    return record


def _transfer(client: MailServerClient, giver: str, args: dict[str, Any]) -> None:
    """List the domains under the receiver, take them off the giver, transfer ownership;
    if the ownership call fails, give the domains back so administration and ownership
    do not part ways."""
    target, moving = args["target"], args["moving"]
    client.update_account(target, {"domains": join_list(args["target_domains"])})
    if moving:
        client.update_account(giver, {"domains": ""})
    try:
        client.transfer_ownership(target)
    except (TransientError, PermanentError) as exc:
        if isinstance(exc, TransientError) and _transfer_happened(client, giver, args):
            return  # the answer was lost, the transfer was not
        try:
            client.update_account(target, {"domains": join_list(args["target_before"])})
            if moving:
                client.update_account(giver, {"domains": join_list(moving)})
        except (TransientError, PermanentError) as undo:
            # The giver lists nothing now: the next attempt completes the transfer forwards.
            raise _noted(
                exc,
                f"ownership transfer failed and giving the domains back failed too "
                f"({undo.reason}); the next attempt completes it",
            ) from None
        raise _noted(
            exc, f"ownership transfer failed; the domains were given back to {giver}"
        ) from None


def _noted(exc: TransientError | PermanentError, note: str) -> TransientError | PermanentError:
    """The same failure, with what the bridge did about it first in the message."""
    message = f"{note}: {exc.message}"
    if isinstance(exc, TransientError):
        return TransientError(exc.reason, message, status=exc.status, retry_after=exc.retry_after)
    return PermanentError(exc.reason, message, status=exc.status)


def _transfer_happened(client: MailServerClient, giver: str, args: dict[str, Any]) -> bool:
    """After a lost answer: the giver owned objects before and owns none now."""
    if not args.get("owned"):
        return False
    try:
        now = client.find_domainadmin(giver)
    except (TransientError, PermanentError):
        return False
    return isinstance(now, DomainAdmin) and not any(
        now.used.get(b, 0) for b in QUOTA_FIELDS if b != "storage_mb"
    )


def delete_step_by_step(client: MailServerClient, username: str, domains: tuple[str, ...]) -> None:
    """Delete a DomainAdmin without the cascade route (docs/nms-api.md#cascade-delete): the
    mailboxes and the domains only it administers, then the account. A domain that another
    DomainAdmin also lists is not this account's alone: it is only taken off its list."""
    others = {
        d.casefold()
        for da in client.list_domainadmins()
        if not same(da.username, username)
        for d in da.domains
    }
    own = tuple(d for d in domains if d.casefold() not in others)
    step = "the mailboxes"
    try:
        for user in client.list_mailusers(own):
            client.delete_account(user.username)
        for domain in own:
            step = f"the domain {domain}"
            client.delete_domain(domain)
        step = "emptying its domains"
        if domains:
            client.update_account(username, {"domains": ""})
        step = "the account"
        client.delete_account(username)
    except PermanentError as exc:
        if (
            step == "the account"
            and exc.status == 404
            and client.find_domainadmin(username) is None
        ):
            return  # gone already (deleted by hand meanwhile), not a missing route
        raise PermanentError(
            "delete_incomplete",
            f'the mail server has no cascade delete route, and deleting "{username}" step by '
            f"step stopped at {step}: {exc.message}. The account stays disabled; delete what "
            "is left in the NMS portal, then retry",
            status=exc.status,
        ) from None


def delete_time(requested_at: datetime | None, grace_days: float) -> datetime | None:
    """When a terminated service's DomainAdmin may be deleted."""
    if requested_at is None:
        return None
    return requested_at + timedelta(days=grace_days)
