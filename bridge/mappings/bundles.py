"""Quota bundles: the five DomainAdmin quotas, each a count or explicitly unlimited."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

Unlimited = Literal["unlimited"]
UNLIMITED: Final[Unlimited] = "unlimited"
Quota = int | Unlimited


def add_quota(a: Quota, b: Quota) -> Quota:
    """Add two quotas; unlimited absorbs anything."""
    if a == UNLIMITED or b == UNLIMITED:
        return UNLIMITED
    return a + b


def scale_quota(q: Quota, factor: int) -> Quota:
    """Multiply a per-unit quota by a quantity (0 units of unlimited adds nothing)."""
    if q == UNLIMITED:
        return UNLIMITED if factor > 0 else 0
    return q * factor


def format_quota(q: Quota) -> str:
    """Render a quota for people."""
    return "unlimited" if q == UNLIMITED else str(q)


@dataclass(frozen=True)
class QuotaBundle:
    """What one DomainAdmin may own."""

    domains: Quota = 0
    domain_aliases: Quota = 0
    aliases: Quota = 0
    mailboxes: Quota = 0
    storage_mb: Quota = 0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The bundle fields in their canonical order."""
        return tuple(f.name for f in fields(cls))

    def __add__(self, other: QuotaBundle) -> QuotaBundle:
        return QuotaBundle(
            **{n: add_quota(getattr(self, n), getattr(other, n)) for n in self.field_names()}
        )

    def times(self, quantity: int) -> QuotaBundle:
        """This bundle as a per-unit increment, taken `quantity` times."""
        return QuotaBundle(
            **{n: scale_quota(getattr(self, n), quantity) for n in self.field_names()}
        )

    def as_dict(self) -> dict[str, Quota]:
        """Plain dict, JSON-ready (unlimited stays the string "unlimited")."""
        return {n: getattr(self, n) for n in self.field_names()}
