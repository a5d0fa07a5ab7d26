"""The NMS password policy and the only form in which a password is kept: a SHA512-crypt hash."""

from __future__ import annotations

from passlib.hash import sha512_crypt

from bridge.errors import BridgeError

HASH_PREFIX = "{SHA512-CRYPT}"
# 5000 rounds is the crypt(3) default: the plain "$6$salt$hash" form that Dovecot and the
# NMS accept (https://doc.dovecot.org/configuration_manual/authentication/password_schemes/).
_hasher = sha512_crypt.using(rounds=5000)
# passlib builds its hash64 codec lazily, and two threads building it at once fail with
# AttributeError '_lazy_opts' (seen as HTTP 500s when a new gunicorn worker's first hooks
# arrive together). One hash here builds it while imports are still one at a time.
_hasher.hash("Warm-up-0nly")


class PasswordPolicyError(BridgeError):
    """A password the mail server would refuse."""

    http_status = 422


def policy_violations(password: str) -> list[str]:
    """The NMS rules (docs/nms-api.md#passwords) this password breaks; empty when it passes."""
    problems = []
    if len(password) < 12:
        problems.append("must be at least 12 characters")
    if not any(c.isupper() for c in password):
        problems.append("must contain an uppercase letter")
    if not any(c.islower() for c in password):
        problems.append("must contain a lowercase letter")
    if not any(c.isdigit() for c in password):
        problems.append("must contain a digit")
    return problems


def check_and_hash(password: str, field: str = "password") -> str:
    """Refuse a password the mail server would refuse; otherwise its `{SHA512-CRYPT}` hash."""
    problems = policy_violations(password)
    if problems:
        raise PasswordPolicyError(
            "password_policy",
            "the password does not meet the mail server's policy: " + "; ".join(problems),
            errors={field: problems},
        )
    return HASH_PREFIX + str(_hasher.hash(password))


def is_hash(value: str) -> bool:
    """True for a `{SHA512-CRYPT}$6$...` value."""
    return value.startswith(HASH_PREFIX + "$6$")
