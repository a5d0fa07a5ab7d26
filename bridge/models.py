"""Tables: services (desired state and reconcile job), events, attempts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bridge.db import Base, UTCDateTime, utcnow


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        values_callable=lambda e: [m.value for m in e],
        native_enum=False,
        length=20,
        validate_strings=True,
    )


class EventStatus(enum.StrEnum):
    """Where one event stands."""

    RECEIVED = "received"
    QUEUED = "queued"
    APPLIED = "applied"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    IGNORED = "ignored"


class ServiceState(enum.StrEnum):
    """What the billing system wants the DomainAdmin to be."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


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


class Event(Base):
    """One accepted webhook delivery, with its redacted payload and outcome."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "webhook_id", name="uq_events_source_webhook_id"),
        Index("ix_events_service_id", "service_id", "id"),
        Index("ix_events_status", "status", "id"),
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
    __table_args__ = (Index("ix_attempts_service_id", "service_id", "id"),)

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
