"""The NMS password policy and the only form in which a password is kept: a SHA512-crypt hash.

The hash is computed by the system's crypt library (libxcrypt's `crypt_rn`, or `crypt_r`)
through ctypes: C speed, and ctypes releases the GIL for the call, so the other threads of a
gunicorn worker keep serving (and keep SQLite's write lock moving) while one thread hashes.
Where that library is missing or cannot make a `$6$` hash, libpass's own SHA512-crypt gives
the same strings, more slowly and holding the GIL. `BACKEND` says which one this process uses.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import secrets
from collections.abc import Callable

from bridge.errors import BridgeError

HASH_PREFIX = "{SHA512-CRYPT}"
#: A longer password is refused: the C library refuses 512 bytes and more, and every one of
#: the 5,000 rounds hashes the whole password, so the cap also bounds the CPU one hook costs.
MAX_PASSWORD_BYTES = 256
# 5000 rounds is the crypt(3) default: the plain "$6$salt$hash" form that Dovecot and the
# NMS accept (https://doc.dovecot.org/configuration_manual/authentication/password_schemes/),
# so the setting carries no "rounds=" segment. 16 salt characters is the longest it takes.
SALT_LENGTH = 16
SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The example of the SHA-crypt specification (https://www.akkadia.org/drepper/SHA-crypt.txt):
# a library that does not give it is not used.
_KNOWN = (b"Hello world!", b"$6$saltstring$")
_KNOWN_HASH = (
    b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
    b"esI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
)
# sizeof(struct crypt_data): 32 KiB in libxcrypt (crypt.h); glibc's own, older crypt_r
# needs about 128 KiB, so crypt_r gets a buffer large enough for either.
_CRYPT_RN_DATA = 32768
_CRYPT_R_DATA = 262144

CCrypt = Callable[[bytes, bytes], bytes | None]


def load_libcrypt(name: str | None) -> CCrypt | None:
    """A `crypt(phrase, setting)` from the shared library `name`, or None when it cannot be
    loaded, has neither `crypt_rn` nor `crypt_r`, or does not compute SHA512-crypt right."""
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)  # CDLL, not PyDLL: calls release the GIL
    except OSError:
        return None
    if hasattr(lib, "crypt_rn"):
        crypt_rn = lib.crypt_rn
        crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        crypt_rn.restype = ctypes.c_char_p

        def crypt(phrase: bytes, setting: bytes) -> bytes | None:
            data = ctypes.create_string_buffer(_CRYPT_RN_DATA)  # one per call: thread-safe
            return crypt_rn(phrase, setting, data, _CRYPT_RN_DATA)  # type: ignore[no-any-return]

    elif hasattr(lib, "crypt_r"):
        crypt_r = lib.crypt_r
        crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        crypt_r.restype = ctypes.c_char_p

        def crypt(phrase: bytes, setting: bytes) -> bytes | None:
            data = ctypes.create_string_buffer(_CRYPT_R_DATA)  # zeroed: "initialized" is 0
            return crypt_r(phrase, setting, data)  # type: ignore[no-any-return]

    else:
        return None
    return crypt if crypt(*_KNOWN) == _KNOWN_HASH else None


_c_crypt = load_libcrypt(ctypes.util.find_library("crypt"))
#: "libcrypt" (C, GIL released) or "libpass" (pure Python, the fallback).
BACKEND = "libcrypt" if _c_crypt is not None else "libpass"

if _c_crypt is None:
    from passlib.hash import sha512_crypt as _libpass_sha512

    # passlib builds its hash64 codec lazily, and two threads building it at once fail with
    # AttributeError '_lazy_opts' (seen as HTTP 500s when a new gunicorn worker's first hooks
    # arrive together). One hash here builds it while imports are still one at a time.
    _libpass_sha512.using(rounds=5000).hash("Warm-up-0nly")


class PasswordPolicyError(BridgeError):
    """A password the mail server would refuse."""

    http_status = 422


def policy_violations(password: str) -> list[str]:
    """The NMS rules (docs/nms-api.md#passwords) this password breaks, and the bridge's own
    limits (valid text, no NUL character, at most MAX_PASSWORD_BYTES); empty when it passes."""
    problems = []
    if len(password) < 12:
        problems.append("must be at least 12 characters")
    if not any(c.isupper() for c in password):
        problems.append("must contain an uppercase letter")
    if not any(c.islower() for c in password):
        problems.append("must contain a lowercase letter")
    if not any(c.isdigit() for c in password):
        problems.append("must contain a digit")
    if "\0" in password:
        problems.append("must not contain a NUL character")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in the JSON
        problems.append("must be valid Unicode text")
    else:
        if size > MAX_PASSWORD_BYTES:
            problems.append(f"must be at most {MAX_PASSWORD_BYTES} bytes long (UTF-8)")
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
    return HASH_PREFIX + sha512_crypt(password)


def new_salt() -> str:
    """16 random characters of the crypt alphabet: 96 random bits, base64 with "." for "+"."""
    return base64.b64encode(secrets.token_bytes(12), altchars=b"./").decode("ascii")


def sha512_crypt(password: str, salt: str | None = None) -> str:
    """`$6$<salt>$<digest>` (5,000 rounds), the same string from either backend.

    ValueError for a password the C library would truncate (NUL) or refuse (too long), and
    for a salt outside the crypt alphabet; `check_and_hash` refuses those first, with a 422.
    """
    secret = password.encode("utf-8")
    if b"\0" in secret or len(secret) > MAX_PASSWORD_BYTES:
        raise ValueError("a password with a NUL character or too long cannot be hashed")
    salt = new_salt() if salt is None else salt
    if not 0 < len(salt) <= SALT_LENGTH or salt.strip(SALT_ALPHABET):
        raise ValueError("a SHA512-crypt salt is 1 to 16 characters of [./0-9A-Za-z]")
    if _c_crypt is None:
        return libpass_sha512_crypt(password, salt)
    hashed = _c_crypt(secret, f"$6${salt}$".encode("ascii"))
    if hashed is None or not hashed.startswith(b"$6$"):
        raise RuntimeError("the system's crypt library refused a valid password")
    return hashed.decode("ascii")


def libpass_sha512_crypt(password: str, salt: str) -> str:
    """The same hash from libpass (the fallback, and the tests' yardstick)."""
    from passlib.hash import sha512_crypt as libpass

    return str(libpass.using(rounds=5000, salt=salt).hash(password))


def is_hash(value: str) -> bool:
    """True for a `{SHA512-CRYPT}$6$...` value."""
    return value.startswith(HASH_PREFIX + "$6$")
