"""Staff accounts: scrypt password hashes, roles, login rate limit, hashed API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bridge.errors import BridgeError
from bridge.models import LoginAttempt, StaffRole, StaffToken, StaffUser
from bridge.runtime import Runtime

#: scrypt cost (RFC 7914): N=2^15, r=8 is 32 MiB and about 0.1 s per hash. Stored in each
#: hash, so raising it later only makes old hashes re-hash at their next login.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024
MIN_PASSWORD_LENGTH = 12

#: Failed logins allowed per e-mail and client address within the window.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW = timedelta(minutes=15)

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
    if "@" not in address or len(address) > 320:
        raise StaffError("invalid_email", f'"{email}" is not an e-mail address')
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
    """Replace a staff member's password; the caller commits."""
    problems = password_problems(password)
    if problems:
        raise StaffError("weak_password", "the password " + "; ".join(problems))
    user.password_hash = hash_password(password)


def _window_failures(session: Session, email: str, ip: str, since: datetime) -> list[datetime]:
    return list(
        session.scalars(
            select(LoginAttempt.at)
            .where(
                LoginAttempt.email == email,
                LoginAttempt.ip == ip,
                LoginAttempt.at > since,
            )
            .order_by(LoginAttempt.at)
        )
    )


def authenticate(rt: Runtime, email: str, password: str, ip: str, now: datetime) -> StaffUser:
    """Check a console login; raise LoginRefusedError (or LoginThrottledError).

    The throttle is checked and the password hashed outside any write transaction, so a
    flood of logins never holds the database's write lock through a hash; the failure (or
    the success) is then written in one short transaction.
    """
    address = normalize_email(email)[:320]
    ip = (ip or "unknown")[:64]
    with rt.reads() as session:
        failures = _window_failures(session, address, ip, now - LOGIN_WINDOW)
        if len(failures) >= LOGIN_FAILURES_ALLOWED:
            oldest = failures[-LOGIN_FAILURES_ALLOWED]
            raise LoginThrottledError(int((oldest + LOGIN_WINDOW - now).total_seconds()) + 1)
        found = find_staff(session, address)
        stored = found.password_hash if found is not None else None
        usable = found is not None and found.disabled_at is None
    ok = verify_password(password, stored or _dummy_hash()) and usable
    rehashed = hash_password(password) if ok and stored and needs_rehash(stored) else None
    user: StaffUser | None = None
    with rt.transaction() as session:
        if not ok:
            session.add(LoginAttempt(email=address, ip=ip, at=now))
            # Old rows are of no further use to the limit.
            session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - 2 * LOGIN_WINDOW))
        else:
            session.execute(
                delete(LoginAttempt).where(LoginAttempt.email == address, LoginAttempt.ip == ip)
            )
            user = find_staff(session, address)
            if user is not None and user.password_hash == stored:
                if rehashed is not None:
                    user.password_hash = rehashed
                user.last_login_at = now
            else:
                user = None  # removed or changed while we hashed: log in again
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
