"""What `bridge check-server` observed of the configured NMS, kept in the database.

`ServerProfile` is one typed record per mail server (`mailserver.base_url`), stored as JSON
in the `server_profiles` table by `save_profile()` and read by `load_profile()`. The parts of
the bridge whose behaviour depends on the server read it from there: a quota of 0 is sent
only when the profile says 0 allows none (docs/nms-api.md#checking-a-real-server).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from bridge.models import MailServerProfile

EmptyAnswer = Literal["200", "204", "404", "other", "unknown"]
ZeroQuota = Literal["zero", "unlimited", "refused", "unknown"]
Case = Literal["kept", "lowered", "refused", "unknown"]
ErrorBody = Literal["json", "json_other", "html", "empty", "unknown"]


@dataclass(frozen=True)
class ServerProfile:
    """How the configured NMS behaves where its docs are silent, as `check-server` saw it."""

    base_url: str
    checked_at: datetime
    #: A search that matches nothing: "200" (`{"accounts": []}`), "204", "404" or "other".
    empty_search: EmptyAnswer = "unknown"
    #: A page past the last account (`start` far out): the same values.
    far_start: EmptyAnswer = "unknown"
    #: True: a new login leaves earlier tokens valid; False: one token per user at a time.
    token_per_login: bool | None = None
    #: What a quota of 0 does: "zero" (allows none), "unlimited" (limits nothing),
    #: "refused" (the server does not take 0), "unknown".
    zero_quota: ZeroQuota = "unknown"
    #: A username with capitals: "kept", "lowered" or "refused".
    username_case: Case = "unknown"
    #: A recovery e-mail with capitals: "kept" or "lowered".
    email_case: Case = "unknown"
    #: The `*_used` fields missing from a DomainAdmin row; None: no row was read.
    usage_fields_missing: tuple[str, ...] | None = None
    #: A second DomainAdmin may list a domain another one lists (a transfer's first step).
    shared_domains: bool | None = None
    #: A refusal's body: "json" (`{"error", "message"}`), "json_other", "html" or "empty".
    error_body: ErrorBody = "unknown"
    #: `DELETE accounts/<u>/` removes a DomainAdmin without domains.
    plain_delete: bool | None = None
    #: `DELETE accounts/cascade/domainadmin/<u>/` exists.
    cascade_delete: bool | None = None
    #: The cascade delete also removes the domains the DomainAdmin lists.
    cascade_removes_domains: bool | None = None
    #: The status of the first refusal in a burst: None not probed, 0 none in BURST calls.
    rate_limit_status: int | None = None
    #: The Retry-After (seconds) sent with that refusal, if any.
    retry_after: float | None = None

    @property
    def zero_means_zero(self) -> bool:
        """True only when a quota of 0 was seen to allow nothing."""
        return self.zero_quota == "zero"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["checked_at"] = self.checked_at.isoformat()
        if self.usage_fields_missing is not None:
            out["usage_fields_missing"] = list(self.usage_fields_missing)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerProfile:
        """Read a stored profile back; keys it does not know are ignored, missing ones unknown."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["checked_at"] = datetime.fromisoformat(str(data["checked_at"]))
        missing = values.get("usage_fields_missing")
        if missing is not None:
            values["usage_fields_missing"] = tuple(missing)
        return cls(**values)


def profile_key(base_url: str) -> str:
    """The stored profile's key: the base URL without a trailing slash."""
    return base_url.rstrip("/")


def load_profile(db: Session | Connection, base_url: str) -> ServerProfile | None:
    """The profile stored for this server, or None before the first `check-server`."""
    row = db.execute(
        select(MailServerProfile.profile, MailServerProfile.checked_at).where(
            MailServerProfile.base_url == profile_key(base_url)
        )
    ).first()
    if row is None:
        return None
    return ServerProfile.from_dict({**row.profile, "checked_at": row.checked_at.isoformat()})


def save_profile(
    session: Session, profile: ServerProfile, checks: list[dict[str, str]] | None = None
) -> None:
    """Store (or replace) the server's profile and the report's rows; the caller commits."""
    key = profile_key(profile.base_url)
    row = session.get(MailServerProfile, key)
    if row is None:
        row = MailServerProfile(base_url=key)
        session.add(row)
    row.checked_at = profile.checked_at
    row.profile = profile.as_dict()
    row.checks = checks or []
