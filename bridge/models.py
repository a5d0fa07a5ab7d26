"""Every table of the bridge, in one place: the ledger (services, events, attempts), the
mail-server gate, staff accounts and the audit log. Migrations live in bridge/migrations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bridge.db import Base, UTCDateTime, utcnow
from bridge.lifecycle import EventStatus, ServiceState

#: The largest id an Integer key holds on every database (PostgreSQL's `integer`): a larger
#: one is refused where it is given (a route, a filter), never sent in a query.
MAX_ROW_ID = 2**31 - 1


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        values_callable=lambda e: [m.value for m in e],
        native_enum=False,
        length=20,
        validate_strings=True,
    )


class Service(Base):
    """One billing service = one DomainAdmin; its desired state and its reconcile job."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("source", "service_ref", name="uq_services_source_ref"),
        Index("ix_services_job_due_at", "job_due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    service_ref: Mapped[str] = mapped_column(String(64))
    username: Mapped[str | None] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255))
    client_ref: Mapped[str | None] = mapped_column(String(64))
    client_email: Mapped[str | None] = mapped_column(String(320))
    #: The recovery e-mail our last create POST carried (stored before the POST): a
    #: DomainAdmin with it is ours even if the answer was lost and the client moved since.
    created_as_email: Mapped[str | None] = mapped_column(String(320))
    #: The binding to one DomainAdmin (`username`): how (created, adopted, imported, linked,
    #: relinked), when and by whom. The bridge writes only to a bound service's account.
    bound_how: Mapped[str | None] = mapped_column(String(20))
    bound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bound_by: Mapped[str | None] = mapped_column(String(320))
    #: A create event was absorbed: only then may a reconcile create or adopt an account.
    create_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    client_name: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(64))
    tier_key: Mapped[str | None] = mapped_column(String(64))
    addons: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    desired_state: Mapped[ServiceState | None] = mapped_column(_enum(ServiceState))
    password_hash: Mapped[str | None] = mapped_column(Text)
    password_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    transfer_to: Mapped[str | None] = mapped_column(String(64))
    aspect_times: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    terminate_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    applied_generation: Mapped[int] = mapped_column(Integer, default=0)
    job_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reason: Mapped[str | None] = mapped_column(String(64))
    last_message: Mapped[str | None] = mapped_column(Text)
    suspended_accounts: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[Event]] = relationship(back_populates="service", order_by="Event.id")

    @property
    def bound(self) -> bool:
        """True once the service is bound to its DomainAdmin."""
        return self.bound_at is not None

    @property
    def label(self) -> str:
        """How people name it: `whmcs:1002`."""
        return f"{self.source}:{self.service_ref}"


class Event(Base):
    """One accepted webhook delivery, with its redacted payload and outcome."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "webhook_id", name="uq_events_source_webhook_id"),
        Index("ix_events_service_id", "service_id", "id"),
        Index("ix_events_status", "status", "id"),
        # The chart and `since` scan by time; source-filtered pages by source (migration 0003).
        Index("ix_events_received_at", "received_at"),
        Index("ix_events_source_id", "source", "id"),
        # The console's per-status counts and unresolved failures, by source or not (0010).
        Index("ix_events_source_status_resolved", "source", "status", "resolved_at"),
        Index("ix_events_status_resolved", "status", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(255))
    body_sha256: Mapped[str] = mapped_column(String(64))
    native_event: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(32))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id", ondelete="SET NULL"))
    service_ref: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[EventStatus] = mapped_column(_enum(EventStatus))
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    service: Mapped[Service | None] = relationship(back_populates="events")
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(320))

    def log_fields(self) -> dict[str, object]:
        """What the one log line about this event's outcome says (also its JSON fields)."""
        return {
            "event_id": self.id,
            "source": self.source,
            "service": self.service_ref,
            "action": self.action,
            "status": self.status.value,
            "reason": self.reason,
        }


class Attempt(Base):
    """One reconcile of a service: the calls made and how it ended."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_service_id", "service_id", "id"),
        Index("ix_attempts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    calls: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Gate(Base):
    """Shared limiter and circuit state for one mail server."""

    __tablename__ = "mailserver_gate"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    next_slot_at: Mapped[float] = mapped_column(Float, default=0.0)
    blocked_until: Mapped[float] = mapped_column(Float, default=0.0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[float] = mapped_column(Float, default=0.0)
    #: Why calls pause until open_until when it is not a run of failures (a ban).
    open_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: The MasterAdmin's API token, shared by every process (a bearer credential: never
    #: logged; the database holds it as the config holds the password).
    token: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_valid_to: Mapped[float] = mapped_column(Float, default=0.0)
    #: When the fleet logs in again, a little before token_valid_to.
    token_renew_at: Mapped[float] = mapped_column(Float, default=0.0)
    #: A process is logging in until then; the others wait for its token.
    login_until: Mapped[float] = mapped_column(Float, default=0.0)


class StaffRole(enum.StrEnum):
    """What a staff member may do: viewers read, operators also retry, resolve and reconcile,
    admins also manage staff accounts."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class StaffUser(Base):
    """A support person who may use the console, the JSON API and the staff CLI."""

    __tablename__ = "staff_users"
    __table_args__ = (UniqueConstraint("email", name="uq_staff_users_email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[StaffRole] = mapped_column(
        Enum(
            StaffRole,
            values_callable=lambda e: [m.value for m in e],
            native_enum=False,
            length=20,
            validate_strings=True,
        )
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Every console session carries the generation it began in; logout, disable, a role
    #: change and a password reset raise it, which ends all of this person's sessions at once.
    session_generation: Mapped[int] = mapped_column(Integer, default=0)

    tokens: Mapped[list[StaffToken]] = relationship(
        back_populates="staff", order_by="StaffToken.id", cascade="all, delete-orphan"
    )

    @property
    def can_operate(self) -> bool:
        """True for operators and admins: retry, resolve, reconcile."""
        return self.role in (StaffRole.OPERATOR, StaffRole.ADMIN)

    @property
    def is_admin(self) -> bool:
        """True for admins: they also add, disable and change staff accounts."""
        return self.role is StaffRole.ADMIN


class StaffToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "staff_tokens"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_staff_tokens_token_hash"),
        Index("ix_staff_tokens_staff_id", "staff_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    staff: Mapped[StaffUser] = relationship(back_populates="tokens")


class LoginAttempt(Base):
    """One failed console login, kept for the rate limit (shared by every gunicorn worker)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_ip_at", "email", "ip", "at"),
        Index("ix_login_attempts_ip_at", "ip", "at"),  # the per-address limit (0006)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One staff action. Plain ids, no foreign keys: the history outlives what it names."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_event_id", "event_id", "id"),
        Index("ix_audit_log_service_id", "service_id", "id"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(320))
    staff_id: Mapped[int | None] = mapped_column(Integer)
    via: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(Integer)
    service_id: Mapped[int | None] = mapped_column(Integer)
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The service it names, if it still exists (read only; for `whmcs:1002` in the text).
    service: Mapped[Service | None] = relationship(
        primaryjoin="foreign(AuditEntry.service_id) == Service.id", viewonly=True, lazy="selectin"
    )


class Usage(Base):
    """What the mail server last reported a bound service's DomainAdmin uses (`usage.refresh_h`).

    One row per service; a figure the server did not report is NULL, never a guessed 0.
    """

    __tablename__ = "service_usage"

    service_id: Mapped[int] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(255))
    storage_used_mb: Mapped[int | None] = mapped_column(Integer)
    storage_total_mb: Mapped[int | None] = mapped_column(Integer)
    mailboxes_used: Mapped[int | None] = mapped_column(Integer)
    mailboxes_limit: Mapped[int | None] = mapped_column(Integer)
    domains_used: Mapped[int | None] = mapped_column(Integer)
    domains_limit: Mapped[int | None] = mapped_column(Integer)
    aliases_used: Mapped[int | None] = mapped_column(Integer)
    aliases_limit: Mapped[int | None] = mapped_column(Integer)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Schedule(Base):
    """When a periodic worker task is next due; shared so several workers run it once."""

    __tablename__ = "worker_schedule"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_result: Mapped[str | None] = mapped_column(Text)


class MailServerProfile(Base):
    """What `bridge check-server` observed of one mail server (bridge/mailserver/probe.py):
    one row per `mailserver.base_url`, the `ServerProfile` as JSON plus the checks shown."""

    __tablename__ = "server_profiles"

    base_url: Mapped[str] = mapped_column(String(255), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class AccountRead(Base):
    """The last time staff read a service's DomainAdmin from the mail server, and what it
    showed (never a password hash): the console shows this instead of reading on every view."""

    __tablename__ = "account_reads"

    service_id: Mapped[int] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(255))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_by: Mapped[str | None] = mapped_column(String(320))
    #: The account as read (None: no account of that name), and a transfer's receiver.
    account: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    target: Mapped[dict[str, Any] | None] = mapped_column(JSON)
