"""Reason codes in words: what happened and what a support person does about it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Explanation:
    """A reason for people."""

    title: str
    todo: str


_FIX_THEN_RETRY = "Fix the cause, then press Retry."
_WAIT = "Nothing to do: the worker retries on its schedule. Retry now to try at once."

REASONS: dict[str, Explanation] = {
    "unmapped_product": Explanation(
        "The billing product has no tier",
        "Add the product under products: in the config (see Mappings), reload the bridge, "
        "then press Retry.",
    ),
    "unknown_tier": Explanation(
        "The product names a tier that is not configured",
        "Add the tier under tiers: or correct the product's tier setting, then press Retry.",
    ),
    "invalid_addon_quantity": Explanation(
        "An add-on quantity is not a whole number",
        "Correct the configurable option in the billing system, then send the change again.",
    ),
    "quota_below_usage": Explanation(
        "The new package is smaller than what the customer already uses",
        "Ask the customer to remove mailboxes or domains (or keep the bigger package), "
        "then press Retry.",
    ),
    "usage_unknown": Explanation(
        "The mail server does not report usage, so a smaller package could not be checked",
        "Check the customer's usage in the NMS; change the package there (or keep the bigger "
        "one), then press Retry.",
    ),
    "quota_zero_ambiguous": Explanation(
        "The package sets a quota to 0, which this mail server may read as unlimited",
        "Run `bridge check-server` (it stores what 0 means on this server), or set the tier's "
        "quota to 1 or more in the config; then press Retry.",
    ),
    "username_taken": Explanation(
        "The username belongs to another account on the mail server",
        "Choose another username in the billing system, or (if it is this customer's) link "
        "the account on the service page or with `bridge import`; then press Retry.",
    ),
    "not_linked": Explanation(
        "The service is not bound to a DomainAdmin, so the bridge changed nothing",
        "If the account is the customer's, link it on the service page (or `bridge services "
        "link SOURCE ID USERNAME`), then press Retry. Otherwise send a create from billing.",
    ),
    "username_changed": Explanation(
        "The event names another DomainAdmin than the one the service is bound to",
        "Nothing was changed. If the customer's account really is the new one, relink the "
        "service (service page or `bridge services relink`), then press Retry.",
    ),
    "not_provisioned": Explanation(
        "The service was never created",
        "The billing system has not sent a create for this service; run Create there.",
    ),
    "no_bundle": Explanation(
        "The service has no product to size it by",
        "Send a create or package change from the billing system.",
    ),
    "transfer_target_unknown": Explanation(
        "The receiving service has no DomainAdmin",
        "Create the receiving service first, then press Retry.",
    ),
    "unlimited_not_supported": Explanation(
        "The tier asks for unlimited, and no number is configured for it",
        "Set mailserver.unlimited_value in the config, reload the bridge, then press Retry.",
    ),
    "mailserver_unreachable": Explanation("The mail server could not be reached", _WAIT),
    "mailserver_unavailable": Explanation("The mail server answered with an error page", _WAIT),
    "mailserver_timeout": Explanation("The mail server did not answer in time", _WAIT),
    "circuit_open": Explanation(
        "Calls to the mail server are paused after repeated failures", _WAIT
    ),
    "rate_limited": Explanation("The mail server asked the bridge to slow down", _WAIT),
    "mailserver_banned": Explanation(
        "The mail server banned the bridge's address for a while (the message says until when)",
        "Nothing is lost: events wait and go out after the ban. If bans recur, lower "
        "mailserver.rate_limit_per_s or ask the mail-server provider to whitelist the address.",
    ),
    "transfer_over_quota": Explanation(
        "The receiving DomainAdmin has no room for what the transfer would give it",
        "Raise the receiving service's bundle in the billing system, then press Retry.",
    ),
    "delete_incomplete": Explanation(
        "The mail server has no cascade delete, and deleting step by step stopped",
        "Delete what the message names in the NMS portal, then press Retry.",
    ),
    "mailserver_redirect": Explanation(
        "The mail server answered with a redirect, which the bridge never follows",
        "Set mailserver.base_url to the address the message names (if it is yours), "
        "restart, then press Retry.",
    ),
    "error_body_with_200": Explanation(
        "The mail server said OK but its answer reported an error", _WAIT
    ),
    "unexpected_answer": Explanation("The mail server's answer made no sense", _WAIT),
    "inline_timeout": Explanation(
        "Not finished within the billing system's request", "The worker finishes it shortly."
    ),
    "tls_verification_failed": Explanation(
        "The mail server's TLS certificate was not accepted",
        "Fix the certificate, or set mailserver.ca_bundle for a private CA; then press Retry.",
    ),
    "mailserver_login_failed": Explanation(
        "The mail server refused the bridge's login",
        "Check mailserver.username and mailserver.password, reload the bridge, then press Retry.",
    ),
    "mailserver_auth_failed": Explanation(
        "The mail server refused a fresh token",
        "Check the MasterAdmin account on the mail server, then press Retry.",
    ),
    "rejected": Explanation("The mail server rejected a call", _FIX_THEN_RETRY),
    "not_permitted": Explanation(
        "The mail server refused a call as not permitted", _FIX_THEN_RETRY
    ),
    "not_found": Explanation("The mail server did not find what a call named", _FIX_THEN_RETRY),
    "conflict": Explanation("The mail server reported a conflict", _FIX_THEN_RETRY),
    "superseded": Explanation(
        "A newer event for this service already set the same thing", "Nothing to do."
    ),
    "not_provisioning": Explanation("This event provisions nothing", "Nothing to do."),
    "retry_requested": Explanation(
        "Queued again by a retry", "The worker applies it shortly (or press Retry to apply now)."
    ),
}


def explain(reason: str | None) -> Explanation | None:
    """The explanation of a reason code, or a plain one for codes not listed."""
    if not reason:
        return None
    return REASONS.get(reason) or Explanation(reason.replace("_", " ").capitalize(), "")
