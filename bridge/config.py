"""Settings: one YAML file, `${VAR}` from the environment, validated once at start.

A wrong or missing value stops the boot with the key's path and the reason, e.g.
`sources.whmcs.secrets.0: environment variable WHMCS_SECRET is not set`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from bridge.errors import ConfigError
from bridge.mappings import Mappings
from bridge.mappings.schema import MappingsSchema

DEFAULT_CONFIG = "config.yaml"
FALLBACK_CONFIG = "config.example.yaml"

#: About 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h (docs/design.md#schedule).
DEFAULT_RETRY_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000)

#: The NMS allows 15-20 calls per second per client address and bans repeat offenders.
MAX_RATE_PER_S = 15

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class MailServerSettings:
    """How to reach the NMS API v1 and how gently."""

    base_url: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    rate_limit_per_s: float = 10.0
    unlimited_value: int | None = None
    #: The longest pause a Retry-After (a 429 or a ban) may impose; longer asks are cut.
    max_retry_after_s: float = 3600.0
    #: Allows plain http:// to a remote host and verify_tls: false (logged at every start).
    insecure_tls_i_understand: bool = False


@dataclass(frozen=True)
class SourceSettings:
    """One billing system installation that may post to /hooks/<name>."""

    name: str
    kind: str
    secrets: tuple[str, ...] = field(repr=False)
    tolerance_s: int = 300


@dataclass(frozen=True)
class IntakeSettings:
    """Limits of the webhook front door."""

    max_body_bytes: int = 262144
    inline_timeout_s: float = 20.0


@dataclass(frozen=True)
class RetrySettings:
    """When to try a failed reconcile again."""

    schedule_s: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE_S
    give_up_after_h: float = 72.0
    lease_s: int = 120


@dataclass(frozen=True)
class TerminationSettings:
    """Never a hasty delete: how long a terminated account stays disabled first."""

    grace_days: float = 7.0


#: A secret_key containing this (any case) is a placeholder from the shipped examples.
EXAMPLE_SECRET_MARK = "change-me"


@dataclass(frozen=True)
class AdminSettings:
    """Staff console secrets."""

    secret_key: str = field(repr=False, default="")
    trusted_proxies: int = 0
    secure_cookies: bool = False
    #: Accept a placeholder secret_key: only the bundled `make run` sets this (through
    #: BRIDGE_ALLOW_EXAMPLE_SECRET), so a copied example config refuses its placeholder.
    allow_example_secret: bool = False

    def secret_key_refusal(self) -> str | None:
        """Why the console may not sign with secret_key (empty, or a placeholder), or None."""
        if not self.secret_key:
            return "admin.secret_key is empty"
        if EXAMPLE_SECRET_MARK in self.secret_key.lower() and not self.allow_example_secret:
            return (
                "admin.secret_key is a placeholder from the examples (accepted only by "
                "`make run`, with admin.allow_example_secret)"
            )
        return None


@dataclass(frozen=True)
class ClientSetupSettings:
    """What a reseller's welcome e-mail and client area tell the customer."""

    mail_hostname: str | None = None
    webmail_url: str | None = None
    admin_url: str | None = None
    mx: tuple[tuple[str, int], ...] = ()
    backup_mx: tuple[str, ...] = ()
    spf_include: str | None = None


@dataclass(frozen=True)
class UsageSettings:
    """How often `bridge worker` reads the mail server's usage figures."""

    refresh_h: float = 6.0


@dataclass(frozen=True)
class LoggingSettings:
    """Log level and format."""

    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything the bridge reads from its config file, frozen after start."""

    database_url: str
    mailserver: MailServerSettings
    sources: Mapping[str, SourceSettings]
    mappings: Mappings
    intake: IntakeSettings = IntakeSettings()
    retry: RetrySettings = RetrySettings()
    termination: TerminationSettings = TerminationSettings()
    admin: AdminSettings = AdminSettings()
    logging: LoggingSettings = LoggingSettings()
    client_setup: ClientSetupSettings = ClientSetupSettings()
    usage: UsageSettings = UsageSettings()
    path: str = ""
    #: Why this file was chosen (see `choose_config`), and when it was read.
    origin: str = ""
    loaded_at: datetime | None = None


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class MailServerSchema(_Strict):
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    username = fields.String(required=True, validate=validate.Length(min=1))
    password = fields.String(required=True, validate=validate.Length(min=1))
    verify_tls = fields.Boolean(load_default=True)
    ca_bundle = fields.String(load_default=None, allow_none=True)
    connect_timeout_s = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=120))
    read_timeout_s = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=600))
    rate_limit_per_s = fields.Float(
        load_default=10.0,
        validate=validate.Range(
            min=0.1,
            max=MAX_RATE_PER_S,
            error="must be between {min} and {max} calls per second: the NMS allows 15-20 per "
            "second per client address and bans repeat offenders for an hour or more",
        ),
    )
    unlimited_value = fields.Integer(load_default=None, allow_none=True)
    max_retry_after_s = fields.Float(load_default=3600.0, validate=validate.Range(min=1, max=86400))
    insecure_tls_i_understand = fields.Boolean(load_default=False)

    @validates_schema
    def ca_bundle_exists(self, data: dict[str, Any], **kwargs: Any) -> None:
        bundle = data.get("ca_bundle")
        if bundle and not Path(bundle).is_file():
            raise ValidationError(f"file {bundle} does not exist", "ca_bundle")

    @validates_schema
    def tls_not_weakened(self, data: dict[str, Any], **kwargs: Any) -> None:
        # Every call carries the MasterAdmin's token (the login its password): plain HTTP or
        # an unchecked certificate hands both to whoever sits in between.
        if data.get("insecure_tls_i_understand"):
            return
        url = urlsplit(str(data.get("base_url") or ""))
        if url.scheme == "http" and not _loopback(url.hostname or ""):
            raise ValidationError(
                "plain http:// sends the MasterAdmin credentials unencrypted; use https://, "
                "or set mailserver.insecure_tls_i_understand: true for a test server",
                "base_url",
            )
        if data.get("verify_tls") is False and not data.get("ca_bundle"):
            raise ValidationError(
                "false turns certificate checks off; set mailserver.ca_bundle to your CA's "
                "PEM file instead, or set mailserver.insecure_tls_i_understand: true for a "
                "test server",
                "verify_tls",
            )


def _loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SourceSchema(_Strict):
    kind = fields.String(required=True)
    secrets = fields.List(
        fields.String(), required=True, validate=validate.Length(min=1, error="list one secret")
    )
    tolerance_s = fields.Integer(load_default=300, validate=validate.Range(min=1, max=3600))

    @validates_schema
    def known_kind_and_secrets(self, data: dict[str, Any], **kwargs: Any) -> None:
        from bridge.adapters import ADAPTERS
        from bridge.signature import decode_secret

        if data.get("kind") not in ADAPTERS:
            raise ValidationError(f"must be one of: {', '.join(sorted(ADAPTERS))}", "kind")
        errors = {}
        for i, secret in enumerate(data.get("secrets") or []):
            try:
                decode_secret(secret)
            except ValueError as exc:
                errors[i] = [str(exc)]
        if errors:
            raise ValidationError(errors, "secrets")


class IntakeSchema(_Strict):
    max_body_bytes = fields.Integer(
        load_default=262144, validate=validate.Range(min=1024, max=10 * 1024 * 1024)
    )
    inline_timeout_s = fields.Float(load_default=20.0, validate=validate.Range(min=0, max=120))


class RetrySchema(_Strict):
    schedule_s = fields.List(
        fields.Integer(validate=validate.Range(min=1)),
        load_default=list(DEFAULT_RETRY_SCHEDULE_S),
        validate=validate.Length(min=1),
    )
    give_up_after_h = fields.Float(load_default=72.0, validate=validate.Range(min=0))
    lease_s = fields.Integer(load_default=120, validate=validate.Range(min=10, max=3600))


class TerminationSchema(_Strict):
    grace_days = fields.Float(load_default=7.0, validate=validate.Range(min=0))


class AdminSchema(_Strict):
    secret_key = fields.String(load_default="")
    trusted_proxies = fields.Integer(load_default=0, validate=validate.Range(min=0, max=5))
    secure_cookies = fields.Boolean(load_default=False)
    allow_example_secret = fields.Boolean(load_default=False)


class MxSchema(_Strict):
    host = fields.String(required=True, validate=validate.Length(min=1))
    priority = fields.Integer(required=True, validate=validate.Range(min=0, max=65535))


class ClientSetupSchema(_Strict):
    mail_hostname = fields.String(load_default=None, allow_none=True)
    webmail_url = fields.Url(load_default=None, allow_none=True, require_tld=False)
    admin_url = fields.Url(load_default=None, allow_none=True, require_tld=False)
    mx = fields.List(fields.Nested(MxSchema), load_default=list)
    backup_mx = fields.List(fields.String(), load_default=list)
    spf_include = fields.String(load_default=None, allow_none=True)


class UsageSchema(_Strict):
    refresh_h = fields.Float(load_default=6.0, validate=validate.Range(min=0.05, max=168))


class LoggingSchema(_Strict):
    level = fields.String(
        load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"])
    )
    json = fields.Boolean(load_default=False)


class SettingsSchema(MappingsSchema):
    database_url = fields.String(load_default="sqlite:///instance/bridge.db")
    mailserver = fields.Nested(MailServerSchema, required=True)
    sources = fields.Dict(
        keys=fields.String(
            validate=[
                validate.Regexp(
                    r"^[a-z0-9][a-z0-9_-]*$",
                    error="a source name is lower-case letters, digits, _ and -, starting "
                    "with a letter or digit",
                ),
                # /api/services/<source>/<billing id> must never read as an internal id
                validate.Regexp(
                    r".*[a-z_-]", error="a source name needs a letter, not only digits"
                ),
            ]
        ),
        values=fields.Nested(SourceSchema),
        required=True,
    )
    intake = fields.Nested(IntakeSchema, load_default=lambda: IntakeSchema().load({}))
    retry = fields.Nested(RetrySchema, load_default=lambda: RetrySchema().load({}))
    termination = fields.Nested(
        TerminationSchema, load_default=lambda: TerminationSchema().load({})
    )
    admin = fields.Nested(AdminSchema, load_default=lambda: AdminSchema().load({}))
    logging = fields.Nested(LoggingSchema, load_default=lambda: LoggingSchema().load({}))
    client_setup = fields.Nested(
        ClientSetupSchema, load_default=lambda: ClientSetupSchema().load({})
    )
    usage = fields.Nested(UsageSchema, load_default=lambda: UsageSchema().load({}))

    @validates_schema
    def mappings_name_known_sources(self, data: dict[str, Any], **kwargs: Any) -> None:
        sources = data.get("sources") or {}
        for section in ("products", "addons"):
            for source in data.get(section) or {}:
                if source not in sources:
                    raise ValidationError(
                        {source: [f'no source "{source}" under sources:']}, section
                    )


def _flatten(messages: Any, path: str = "") -> list[str]:
    if isinstance(messages, dict):
        out: list[str] = []
        for key, value in messages.items():
            if key in ("_schema", "value"):  # marshmallow nests dict-entry errors under "value"
                out += _flatten(value, path)
            elif key == "key":
                out += _flatten(value, f"{path} (name)")
            else:
                out += _flatten(value, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{path or '(top level)'}: {m.rstrip('.')}" for m in messages]
    if isinstance(messages, list):
        return [line for m in messages for line in _flatten(m, path)]
    return [f"{path or '(top level)'}: {messages}"]


def interpolate(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree.

    A default may hold placeholders itself, expanded only when it is used:
    `${NMS_BASE_URL:-http://127.0.0.1:${NMSIM_PORT:-8025}}`.
    """
    if isinstance(value, dict):
        return {
            k: interpolate(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, environ, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    return _expand(value, environ, path)


def _expand(text: str, environ: Mapping[str, str], path: str) -> str:
    out: list[str] = []
    i = 0
    while (start := text.find("${", i)) >= 0:
        out.append(text[i:start])
        name = _NAME.match(text, start + 2)
        after = name.end() if name else start + 2
        default: str | None = None
        if name is not None and text.startswith("}", after):
            end = after
        elif name is not None and text.startswith(":-", after) and _closing(text, after + 2) >= 0:
            end = _closing(text, after + 2)
            default = text[after + 2 : end]
        else:
            out.append("${")  # not a placeholder: kept as written
            i = start + 2
            continue
        var = name.group(0)
        if environ.get(var):
            out.append(environ[var])
        elif default is not None:
            out.append(_expand(default, environ, path))
        else:
            raise ConfigError("config_invalid", f"{path}: environment variable {var} is not set")
        i = end + 1
    out.append(text[i:])
    return "".join(out)


def _closing(text: str, i: int) -> int:
    """Index of the `}` that closes a placeholder whose name ends at `i` (nesting counted)."""
    depth = 0
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def parse_settings(raw: Any, environ: Mapping[str, str], path: str = "") -> Settings:
    """Validate a parsed YAML tree and freeze it into Settings."""
    if not isinstance(raw, dict):
        raise ConfigError("config_invalid", f"{path or 'config'}: the top level must be a mapping")
    data = interpolate(raw, environ)
    try:
        loaded = SettingsSchema().load(data)
    except ValidationError as exc:
        lines = _flatten(exc.messages)
        raise ConfigError(
            "config_invalid",
            f"{path or 'config'} is not valid:\n  " + "\n  ".join(lines),
            errors=exc.messages if isinstance(exc.messages, dict) else None,
        ) from None
    sources = {
        name: SourceSettings(
            name=name, kind=s["kind"], secrets=tuple(s["secrets"]), tolerance_s=s["tolerance_s"]
        )
        for name, s in loaded["sources"].items()
    }
    setup = loaded["client_setup"]
    retry = dict(loaded["retry"])
    retry["schedule_s"] = tuple(retry["schedule_s"])
    return Settings(
        database_url=loaded["database_url"],
        mailserver=MailServerSettings(**loaded["mailserver"]),
        sources=sources,
        mappings=Mappings(
            tiers=loaded["tiers"], products=loaded["products"], addons=loaded["addons"]
        ),
        intake=IntakeSettings(**loaded["intake"]),
        retry=RetrySettings(**retry),
        termination=TerminationSettings(**loaded["termination"]),
        admin=AdminSettings(**loaded["admin"]),
        logging=LoggingSettings(**loaded["logging"]),
        client_setup=ClientSetupSettings(
            mail_hostname=setup["mail_hostname"],
            webmail_url=setup["webmail_url"],
            admin_url=setup["admin_url"],
            mx=tuple((m["host"], m["priority"]) for m in setup["mx"]),
            backup_mx=tuple(setup["backup_mx"]),
            spf_include=setup["spf_include"],
        ),
        usage=UsageSettings(**loaded["usage"]),
        path=path,
    )


def choose_config(environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The one rule every entry point follows, and why it chose the file it did:
    BRIDGE_CONFIG, else config.yaml in the working directory, else config.example.yaml."""
    env = os.environ if environ is None else environ
    if env.get("BRIDGE_CONFIG"):
        return Path(env["BRIDGE_CONFIG"]), "named by BRIDGE_CONFIG"
    if Path(DEFAULT_CONFIG).exists():
        return Path(DEFAULT_CONFIG), "config.yaml in the working directory"
    return Path(FALLBACK_CONFIG), "no config.yaml here, so the example"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """BRIDGE_CONFIG, else config.yaml, else config.example.yaml (see `choose_config`)."""
    return choose_config(environ)[0]


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> Settings:
    """Read, interpolate and validate the config file; raise ConfigError naming the key."""
    env = os.environ if environ is None else environ
    if path is None:
        file, why = choose_config(env)
    else:
        file, why = Path(path), origin or "given"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config_missing",
            f"config file {file} not found; copy config.example.yaml to config.yaml "
            "or point BRIDGE_CONFIG at your file",
        ) from None
    except OSError as exc:
        raise ConfigError("config_unreadable", f"config file {file}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError("config_invalid", f"{file}{where}: {problem}") from None
    settings = parse_settings(raw, env, str(file))
    return replace(settings, origin=why, loaded_at=datetime.now(UTC))


def reload_config(
    current: Settings, environ: Mapping[str, str] | None = None
) -> tuple[Settings, str | None]:
    """Read the file `current` came from again (a reload, e.g. on SIGHUP).

    Returns the new settings and None, or `current` and the reason the file was refused: a
    broken file never replaces a working config.
    """
    try:
        return load_config(current.path, environ, current.origin), None
    except ConfigError as exc:
        return current, exc.message


#: Settings a server's master process read before it forked its workers (see `serve`).
_SERVED: list[Settings] = []


def serve(settings: Settings) -> None:
    """Remember settings checked by a server's master process (gunicorn.conf.py) before it
    forks its workers: a worker started after a reload serves these, so a file broken since
    the last good (re)load never takes the web app down."""
    _SERVED[:] = [settings]


def served() -> Settings | None:
    """The settings `serve()` remembered in this process, or in the one it was forked from."""
    return _SERVED[0] if _SERVED else None


def describe(settings: Settings) -> str:
    """One line for logs and `bridge config show`: which file, why, and when it was read."""
    when = f", loaded {settings.loaded_at:%Y-%m-%d %H:%M:%S} UTC" if settings.loaded_at else ""
    return f"config {settings.path} ({settings.origin or 'given'}){when}"


#: Keys whose values `masked()` never shows.
SECRET_KEYS = ("password", "secrets", "secret_key")


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by `***` (for `config show`)."""
    from sqlalchemy.engine import make_url

    def plain(value: Any, key: str = "") -> Any:
        if key in SECRET_KEYS and value:
            return [_mask(v) for v in value] if isinstance(value, (list, tuple)) else "***"
        if hasattr(value, "__dataclass_fields__"):
            value = {f: getattr(value, f) for f in value.__dataclass_fields__}
        if isinstance(value, Mapping):
            return {str(k): plain(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    data: dict[str, Any] = plain(settings)
    for key in ("path", "origin", "loaded_at"):
        data.pop(key, None)
    data["database_url"] = make_url(settings.database_url).render_as_string(hide_password=True)
    return data


def _mask(secret: Any) -> str:
    text = str(secret)
    return f"{text[:6]}***" if text.startswith("whsec_") else "***"
