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
from bridge.mailserver import Account, DomainAdmin, MailServerClient, PermanentError
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
            result.add("delete", f'delete DomainAdmin "{desired.username}" and its mail')
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
            below = [
                f"{USAGE_WORDS[b]}: {actual.used[b]} in use, new limit {v}"
                for b, v in changes.items()
                if actual.used.get(b, 0) > v
            ]
            if below:
                # Blocks only the package; suspend, password and the rest still go ahead.
                result.blocked["package"] = PermanentError(
                    "quota_below_usage",
                    "the new bundle is below what the customer uses: " + "; ".join(below),
                )
                changes = {}
    else:
        changes = {}
    # Quotas, recovery e-mail and password go in one PATCH: the fewest calls.
    fields: dict[str, Any] = {QUOTA_FIELDS[b][0]: v for b, v in changes.items()}
    said = [f"{b} {actual.limits.get(b)} -> {v}" for b, v in changes.items()]
    if desired.recovery_email and actual.recovery_email != desired.recovery_email:
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
    result.drift.append(Difference("owner_of_domains", target.username, actual.username))
    result.add(
        "transfer",
        f"move {', '.join(moving) or 'remaining objects'} to {target.username} and transfer "
        "their ownership",
        target=target.username,
        target_domains=tuple(dict.fromkeys((*target.domains, *moving))),
        moving=moving,
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
            client.delete_domainadmin(username)
            record["deleted"] = True
        elif step.kind == "transfer":
            target = step.args["target"]
            client.update_account(target, {"domains": join_list(step.args["target_domains"])})
            if step.args["moving"]:
                client.update_account(username, {"domains": ""})
            client.transfer_ownership(target)
            record["transfer_done"] = True
        elif step.kind == "transfer_done":
            record["transfer_done"] = True
        else:  # pragma: no cover - plan() makes only the kinds above
            raise ValueError(step.kind)
    return record


def delete_time(requested_at: datetime | None, grace_days: float) -> datetime | None:
    """When a terminated service's DomainAdmin may be deleted."""
    if requested_at is None:
        return None
    return requested_at + timedelta(days=grace_days)
