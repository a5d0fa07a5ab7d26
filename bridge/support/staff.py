"""Staff accounts: scrypt password hashes, roles, the login limits, session generations,
hashed API tokens, and the account changes (disable, enable, role, password, remove)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.logging import escape_text
from bridge.models import LoginAttempt, StaffRole, StaffToken, StaffUser
from bridge.runtime import Runtime
from bridge.support.actions import Actor

#: scrypt cost (RFC 7914): N=2^15, r=8 is 32 MiB and about 0.1 s per hash. Stored in each
#: hash, so raising it later only makes old hashes re-hash at their next login.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024
MIN_PASSWORD_LENGTH = 12

#: Failed logins allowed per e-mail and client address within the window.
LOGIN_FAILURES_ALLOWED = 5
#: Failed logins allowed from one client address, whatever the e-mail, within the window.
#: Both limits are checked before any password is hashed.
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = timedelta(minutes=15)
#: Password hashes (login checks and their re-hashes) one process runs at once. A login that
#: finds every slot taken is answered "busy, try again" at once, never queued: a login flood
#: can then hold neither the web threads nor more than this many CPUs away from the webhooks.
HASH_SLOTS = 1
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)

TOKEN_PREFIX = "mbst_"
#: Writing last_used_at on every API call would turn reads into writes; once in a while is enough.
TOKEN_TOUCH_EVERY = timedelta(minutes=5)


class StaffError(BridgeError):
    """A staff account operation that cannot be done as asked."""


class LoginRefusedError(BridgeError):
    """Wrong e-mail or password, a disabled account, or too many failures."""

    http_status = 401


class LoginThrottledError(LoginRefusedError):
    """Too many failed logins for this e-mail from this address."""

    http_status = 429

    def __init__(self, retry_after_s: int) -> None:
        minutes = max(1, -(-retry_after_s // 60))
        super().__init__(
            "too_many_attempts",
            f"too many failed logins; try again in {minutes} minute{'s' if minutes > 1 else ''}",
        )
        self.retry_after_s = retry_after_s


class LoginBusyError(LoginRefusedError):
    """Every password-hash slot of this process is taken: try again in a moment."""

    http_status = 503
    retry_after_s = 5

    def __init__(self) -> None:
        super().__init__(
            "login_busy", "the console is busy checking other logins; try again in a few seconds"
        )


# ---- passwords --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An scrypt hash with its parameters and salt: `scrypt$N$r$p$salt$key`."""
    salt = os.urandom(16)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when the password matches the stored scrypt hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(key)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """True when a hash was made with weaker parameters than today's."""
    parts = stored.split("$")
    return len(parts) != 6 or parts[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


def password_problems(password: str) -> list[str]:
    """Why a staff password is too weak; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password:
        problems.append("must not start or end with a space")
    return problems


# Verifying against this when the e-mail is unknown keeps both paths equally slow.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None or needs_rehash(_DUMMY_HASH):
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


# ---- accounts ---------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """E-mail addresses compare case-insensitively here."""
    return email.strip().lower()


def find_staff(session: Session, email: str) -> StaffUser | None:
    """The staff member with this e-mail, or None."""
    return session.scalar(select(StaffUser).where(StaffUser.email == normalize_email(email)))


def add_staff(
    session: Session, email: str, password: str, role: StaffRole, now: datetime
) -> StaffUser:
    """Create a staff member; the caller commits."""
    address = normalize_email(email)
    if (
        "@" not in address
        or len(address) > 320
        or " " in address
        or escape_text(address) != address
    ):
        raise StaffError("invalid_email", f"{address!r} is not an e-mail address")
    problems = password_problems(password)
    if problems:
        raise StaffError("weak_password", "the password " + "; ".join(problems))
    if find_staff(session, address) is not None:
        raise StaffError("staff_exists", f"{address} is already a staff member")
    user = StaffUser(
        email=address, password_hash=hash_password(password), role=role, created_at=now
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: StaffUser, password: str) -> None:
    """Replace a staff member's password and end their sessions; the caller commits."""
    problems = password_problems(password)
    if problems:
        raise StaffError("weak_password", "the password " + "; ".join(problems))
    user.password_hash = hash_password(password)
    end_sessions(user)


def end_sessions(user: StaffUser) -> None:
    """End every console session of this person (the cookie's generation no longer matches)."""
    user.session_generation = (user.session_generation or 0) + 1


def _throttled(failures: list[datetime], allowed: int, now: datetime) -> LoginThrottledError | None:
    """The refusal once `allowed` failures fall inside the window (oldest first), else None."""
    if len(failures) < allowed:
        return None
    oldest = failures[-allowed]
    return LoginThrottledError(int((oldest + LOGIN_WINDOW - now).total_seconds()) + 1)


def check_login_limits(session: Session, email: str, ip: str, now: datetime) -> None:
    """Raise LoginThrottledError when this client address, or this e-mail from this address,
    has failed too often within the window. Indexed reads only: no hash, no write."""
    recent = select(LoginAttempt.at).where(
        LoginAttempt.ip == ip, LoginAttempt.at > now - LOGIN_WINDOW
    )
    newest_first = recent.order_by(LoginAttempt.at.desc()).limit(LOGIN_FAILURES_PER_ADDRESS)
    by_address = list(session.scalars(newest_first))[::-1]
    refusal = _throttled(by_address, LOGIN_FAILURES_PER_ADDRESS, now)
    if refusal is None and len(by_address) >= LOGIN_FAILURES_ALLOWED:
        by_account = session.scalars(
            recent.where(LoginAttempt.email == email).order_by(LoginAttempt.at)
        )
        refusal = _throttled(list(by_account), LOGIN_FAILURES_ALLOWED, now)
    if refusal is not None:
        raise refusal


def authenticate(
    rt: Runtime, email: str, password: str, ip: str, now: datetime, via: str = "web"
) -> StaffUser:
    """Check a console login; raise LoginRefusedError (LoginThrottledError, LoginBusyError).

    In this order, so that a flood of tries costs little: the limits per client address and
    per e-mail and address (reads only); a free hash slot of this process (none: "busy", at
    once); the password check outside any transaction. Then one short transaction writes
    the failure (a LoginAttempt and an audit row) or the success (an audit row). A refused
    try (throttled, busy) writes nothing at all.
    """
    from bridge.support import audit

    address = normalize_email(email)[:320]
    ip = (ip or "unknown")[:64]
    with rt.reads() as session:
        check_login_limits(session, address, ip, now)
        found = find_staff(session, address)
        stored = found.password_hash if found is not None else None
        usable = found is not None and found.disabled_at is None
    if not _hash_slots.acquire(blocking=False):
        raise LoginBusyError()
    try:
        ok = verify_password(password, stored or _dummy_hash()) and usable
        rehashed = hash_password(password) if ok and stored and needs_rehash(stored) else None
    finally:
        _hash_slots.release()
    user: StaffUser | None = None
    with rt.transaction() as session:
        if ok:
            user = find_staff(session, address)
            if user is None or user.password_hash != stored:
                user = None  # removed or changed while we hashed: log in again
        if user is None:
            session.add(LoginAttempt(email=address, ip=ip, at=now))
            # Old rows are of no further use to the limit.
            session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - 2 * LOGIN_WINDOW))
            audit.record(
                session,
                "login_failed",
                actor=address or "(empty)",
                via=via,
                now=now,
                ip=ip,
                email=address,
                reason="invalid_login",
            )
        else:
            session.execute(
                delete(LoginAttempt).where(LoginAttempt.email == address, LoginAttempt.ip == ip)
            )
            if rehashed is not None:
                user.password_hash = rehashed
            user.last_login_at = now
            audit.record(
                session, "login", actor=user.email, via=via, now=now, staff_id=user.id, ip=ip
            )
    if user is None:
        raise LoginRefusedError("invalid_login", "wrong e-mail or password")
    return user


# ---- API tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    """A new token: the plaintext exists only here, to be shown once."""

    token: str
    row: StaffToken


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256, hex (the token itself has 256 random bits)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    session: Session, user: StaffUser, now: datetime, label: str | None = None
) -> IssuedToken:
    """Make a new API token for a staff member; the caller commits and shows it once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = StaffToken(
        staff=user,
        token_hash=token_digest(token),
        prefix=token[: len(TOKEN_PREFIX) + 6],
        label=label,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return IssuedToken(token, row)


def staff_for_token(
    session: Session, token: str, now: datetime
) -> tuple[StaffUser, StaffToken] | None:
    """The active staff member owning an unrevoked token, with the token's row; or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(select(StaffToken).where(StaffToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or row.staff.disabled_at is not None:
        return None
    return row.staff, row


def touch_due(row: StaffToken, now: datetime) -> bool:
    """Whether the token's last use is worth writing: once per TOKEN_TOUCH_EVERY, so API
    reads stay reads."""
    return row.last_used_at is None or now - row.last_used_at > TOKEN_TOUCH_EVERY


def touch_token(session: Session, token_id: int, now: datetime) -> None:
    """Record a token's use (one UPDATE); the caller commits."""
    session.execute(update(StaffToken).where(StaffToken.id == token_id).values(last_used_at=now))


def revoke_tokens(
    session: Session, user: StaffUser, now: datetime, token_id: int | None = None
) -> int:
    """Revoke one token (by id) or all of a staff member's tokens; returns how many."""
    count = 0
    for row in user.tokens:
        if row.revoked_at is None and (token_id is None or row.id == token_id):
            row.revoked_at = now
            count += 1
    if token_id is not None and count == 0:
        raise StaffError("no_such_token", f"{user.email} has no active token {token_id}")
    return count


def list_staff(session: Session) -> list[tuple[StaffUser, int]]:
    """Every staff member with their number of active tokens."""
    active = (
        select(StaffToken.staff_id, func.count(StaffToken.id).label("n"))
        .where(StaffToken.revoked_at.is_(None))
        .group_by(StaffToken.staff_id)
        .subquery()
    )
    rows = session.execute(
        select(StaffUser, func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.staff_id == StaffUser.id)
        .order_by(StaffUser.email)
    )
    return [(user, int(n)) for user, n in rows]


# ---- account changes: CLI and console, each audited ---------------------------------------


def _locked(session: Session, who: int | str) -> StaffUser:
    """The staff member by id or e-mail, row-locked for the change."""
    query = select(StaffUser).with_for_update()
    if isinstance(who, int):
        query = query.where(StaffUser.id == who)
    else:
        query = query.where(StaffUser.email == normalize_email(who))
    user = session.scalars(query).first()
    if user is None:
        raise StaffError(
            "no_such_staff",
            f"there is no staff member {who}; `bridge staff list` shows them",
            http_status=404,
        )
    return user


def _keep_an_admin(session: Session, user: StaffUser, doing: str) -> None:
    """Refuse a change that would leave no active admin (the admins' rows stay locked until
    the caller commits, so two admins cannot demote each other at the same moment)."""
    if not user.is_admin or user.disabled_at is not None:
        return
    admins = session.scalars(
        select(StaffUser.id)
        .where(StaffUser.role == StaffRole.ADMIN, StaffUser.disabled_at.is_(None))
        .with_for_update()
    )
    if set(admins) <= {user.id}:
        raise StaffError(
            "last_admin",
            f"{user.email} is the last active admin; make another one first "
            f"(`bridge staff set-role EMAIL admin`), then {doing}",
            http_status=409,
        )


def disable_staff(rt: Runtime, who: int | str, actor: Actor) -> StaffUser:
    """Disable a staff member: no login, every session ended, every API token revoked."""
    now = utcnow()
    with rt.transaction() as session:
        user = _locked(session, who)
        if user.disabled_at is not None:
            raise StaffError(
                "already_disabled",
                f"{user.email} is disabled since {user.disabled_at:%Y-%m-%d %H:%M} UTC",
                http_status=409,
            )
        _keep_an_admin(session, user, "disable this one")
        user.disabled_at = now
        end_sessions(user)
        revoked = revoke_tokens(session, user, now)
        actor.audit(session, "staff_disabled", now, email=user.email, tokens_revoked=revoked)
    return user


def enable_staff(rt: Runtime, who: int | str, actor: Actor) -> StaffUser:
    """Let a disabled staff member log in again (their old API tokens stay revoked)."""
    now = utcnow()
    with rt.transaction() as session:
        user = _locked(session, who)
        if user.disabled_at is None:
            raise StaffError("not_disabled", f"{user.email} is not disabled", http_status=409)
        user.disabled_at = None
        actor.audit(session, "staff_enabled", now, email=user.email)
    return user


def set_role(rt: Runtime, who: int | str, role: StaffRole, actor: Actor) -> StaffUser:
    """Change a staff member's role; their sessions end (they log in again as the new role)."""
    now = utcnow()
    with rt.transaction() as session:
        user = _locked(session, who)
        if user.role is role:
            raise StaffError("same_role", f"{user.email} is already {role.value}", http_status=409)
        if role is not StaffRole.ADMIN:
            _keep_an_admin(session, user, "change this one's role")
        before = user.role
        user.role = role
        end_sessions(user)
        actor.audit(
            session, "staff_role_changed", now, email=user.email, role=role.value, was=before.value
        )
    return user


def reset_password(rt: Runtime, who: int | str, password: str, actor: Actor) -> StaffUser:
    """Give a staff member a new password; every session of theirs ends."""
    problems = password_problems(password)
    if problems:
        raise StaffError("weak_password", "the password " + "; ".join(problems))
    now = utcnow()
    with rt.transaction() as session:
        user = _locked(session, who)
        set_password(session, user, password)
        actor.audit(session, "staff_password_reset", now, email=user.email)
    return user


def remove_staff(rt: Runtime, who: int | str, actor: Actor) -> str:
    """Delete a staff member and their API tokens; the audit log keeps what they did."""
    now = utcnow()
    with rt.transaction() as session:
        user = _locked(session, who)
        _keep_an_admin(session, user, "remove this one")
        email, role = user.email, user.role.value
        session.delete(user)
        actor.audit(session, "staff_removed", now, email=email, role=role)
    return email


def log_out_everywhere(rt: Runtime, staff_id: int, actor: Actor) -> None:
    """Logout: end every console session of this person (not just this browser's)."""
    now = utcnow()
    with rt.transaction() as session:
        user = session.scalars(
            select(StaffUser).where(StaffUser.id == staff_id).with_for_update()
        ).first()
        if user is not None:
            end_sessions(user)
        actor.audit(session, "logout", now)
