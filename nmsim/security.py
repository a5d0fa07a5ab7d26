"""Passwords, auth tokens and the per-IP rate limiter with temporary bans."""

from __future__ import annotations

import math
import re
import secrets
import string
from collections import deque
from dataclasses import dataclass

from passlib.hash import sha512_crypt

HASH_PREFIX = "{SHA512-CRYPT}"
_HASH_RE = re.compile(
    r"^\{SHA512-CRYPT\}\$6\$(rounds=\d+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$"
)
_TOKEN_ALPHABET = string.ascii_letters + string.digits
# Hashes made by the simulator use the classic glibc default so logins stay fast.
_ROUNDS = 5000


def password_problem(password: str) -> str | None:
    """Return why a plaintext password breaks the NMS policy, or None when it is fine."""
    if len(password) < 12:
        return "password must be at least 12 characters long"
    if not any(c.isupper() for c in password):
        return "password must contain an uppercase letter"
    if not any(c.islower() for c in password):
        return "password must contain a lowercase letter"
    if not any(c.isdigit() for c in password):
        return "password must contain a digit"
    return None


def is_sha512_crypt(value: str) -> bool:
    """Tell whether a value is a `{SHA512-CRYPT}$6$...` hash."""
    return bool(_HASH_RE.match(value))


def hash_password(password: str) -> str:
    """Hash a plaintext password into the stored `{SHA512-CRYPT}$6$...` form."""
    return HASH_PREFIX + sha512_crypt.using(rounds=_ROUNDS).hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Check a plaintext password against a stored `{SHA512-CRYPT}` hash."""
    if not stored.startswith(HASH_PREFIX):
        return False
    try:
        return bool(sha512_crypt.verify(password, stored[len(HASH_PREFIX) :]))
    except ValueError:
        return False


@dataclass
class Token:
    """An issued API token."""

    username: str
    valid_from: int
    valid_to: int


class TokenStore:
    """Issued tokens; not thread-safe on its own (the simulator lock guards it)."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}

    def issue(self, username: str, now: float, ttl: int) -> tuple[str, Token]:
        """Create a 40-character alphanumeric token for a user."""
        value = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(40))
        token = Token(username, int(now), int(now) + ttl)
        self.tokens[value] = token
        return value, token

    def check(self, username: str, value: str, now: float) -> bool:
        """Tell whether a token exists, belongs to the user and has not expired."""
        token = self.tokens.get(value)
        if token is None or token.username != username:
            return False
        if now >= token.valid_to:
            del self.tokens[value]
            return False
        return True

    def drop_user(self, username: str) -> None:
        """Forget every token of a user (account deleted)."""
        for value in [v for v, t in self.tokens.items() if t.username == username]:
            del self.tokens[value]

    def clear(self) -> None:
        """Forget all tokens."""
        self.tokens.clear()


@dataclass
class Refusal:
    """Why a request is refused by the limiter, and for how long."""

    banned: bool
    retry_after: int


class RateLimiter:
    """Per-IP token bucket (capacity = rate) with a ban after repeated excess.

    See "Rate limit and bans" in nmsim/README.md.
    """

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}
        self.breaches: dict[str, deque[float]] = {}
        self.bans: dict[str, float] = {}

    def check(
        self,
        ip: str,
        now: float,
        rate: float,
        ban_after: int,
        ban_window: float,
        ban_seconds: float,
    ) -> Refusal | None:
        """Take one token for this IP; return a Refusal when limited or banned."""
        until = self.bans.get(ip)
        if until is not None:
            if now < until:
                return Refusal(True, max(1, math.ceil(until - now)))
            del self.bans[ip]
        if rate <= 0:
            return None
        capacity = max(1.0, rate)
        tokens, last = self.buckets.get(ip, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - last) * rate)
        if tokens >= 1.0:
            self.buckets[ip] = (tokens - 1.0, now)
            return None
        self.buckets[ip] = (tokens, now)
        retry = max(1, math.ceil((1.0 - tokens) / rate))
        if ban_after > 0:
            recent = self.breaches.setdefault(ip, deque())
            recent.append(now)
            while recent and recent[0] <= now - ban_window:
                recent.popleft()
            if len(recent) >= ban_after:
                self.bans[ip] = now + ban_seconds
                recent.clear()
                return Refusal(True, max(1, math.ceil(ban_seconds)))
        return Refusal(False, retry)

    def clear(self) -> None:
        """Forget buckets, breaches and bans."""
        self.buckets.clear()
        self.breaches.clear()
        self.bans.clear()

    def to_dict(self, now: float) -> dict[str, object]:
        """Describe active bans for the state dump."""
        return {
            "bans": {ip: until for ip, until in self.bans.items() if until > now},
            "breaches": {ip: len(d) for ip, d in self.breaches.items() if d},
        }
