"""What a service should look like now: its row frozen into a `Desired` snapshot."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.config import Settings
from bridge.mailserver import PermanentError
from bridge.mailserver.profile import load_profile
from bridge.mappings import UNLIMITED, MappingError, refuse_ambiguous_zero, resolve
from bridge.models import Service
from bridge.provisioning.reconcile import Desired, delete_time


def limits_for(
    service: Service, settings: Settings, zero_quota: str | None = None
) -> dict[str, int]:
    """The mapped bundle as NMS numbers; raises a BridgeError with a reason when it can't be.

    `zero_quota`: what `bridge check-server` saw a 0 do (None before it ran); a 0 is sent
    only when that is "zero" (mappings.refuse_ambiguous_zero).
    """
    resolution = resolve(
        settings.mappings, service.source, service.product_id, service.tier_key, service.addons
    )
    refuse_ambiguous_zero(resolution, zero_quota)
    limits = {}
    for name, value in resolution.bundle.as_dict().items():
        if value == UNLIMITED:
            if settings.mailserver.unlimited_value is None:
                raise PermanentError(
                    "unlimited_not_supported",
                    f'tier "{resolution.tier}" makes {name} unlimited, but the NMS documents no '
                    "unlimited value: set mailserver.unlimited_value in the config",
                )
            value = settings.mailserver.unlimited_value
        limits[name] = int(value)
    return limits


def snapshot(session: Session, service: Service, settings: Settings) -> Desired:
    """Freeze what the service should look like now."""
    target = None
    if service.transfer_to:
        target = session.scalar(
            select(Service).where(
                Service.source == service.source, Service.service_ref == service.transfer_to
            )
        )
    limits, package_blocked = None, None
    if service.product_id or service.tier_key:
        profile = load_profile(session, settings.mailserver.base_url)
        try:
            limits = limits_for(service, settings, profile.zero_quota if profile else None)
        except MappingError as exc:
            if exc.reason != "quota_zero_ambiguous":
                raise
            # Only the package waits; a suspend, password or terminate still goes ahead.
            package_blocked = PermanentError(exc.reason, exc.message)
    return Desired(
        service_id=service.id,
        source=service.source,
        service_ref=service.service_ref,
        generation=service.generation,
        username=service.username,
        state=service.desired_state,
        limits=limits,
        password_hash=service.password_hash,
        password_pending=service.password_pending,
        recovery_email=service.client_email,
        delete_at=delete_time(service.terminate_requested_at, settings.termination.grace_days),
        bound=service.bound,
        create_requested=service.create_requested,
        suspended_accounts=(
            tuple(service.suspended_accounts) if service.suspended_accounts is not None else None
        ),
        transfer_to_username=target.username if target is not None else None,
        transfer_to_ref=service.transfer_to,
        transfer_to_bound=target is not None and target.bound,
        created_as_email=service.created_as_email,
        package_blocked=package_blocked,
    )
