"""`bridge hooks ...`: signed requests as a billing system sends them: a sample lifecycle
event (`send`), and the connector endpoints (`status`, `service`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import requests

from bridge.adapters.samples import sample
from bridge.cli.base import root
from bridge.config import SourceSettings
from bridge.lifecycle import Action
from bridge.signature import decode_secret, sign

#: Where `hooks send --id` remembers when it first sent an id (relative, like the database).
SENT_IDS = Path("instance") / "hooks-sent.json"


def default_url() -> str:
    """The bridge `make run` serves: 127.0.0.1 on $BRIDGE_PORT (8000)."""
    return f"http://127.0.0.1:{os.environ.get('BRIDGE_PORT') or 8000}"


URL_OPTION = click.option(
    "--url",
    envvar="BRIDGE_URL",
    default=default_url,
    show_default="$BRIDGE_URL, else http://127.0.0.1:$BRIDGE_PORT (8000)",
    help="Bridge base URL.",
)


@click.group()
def hooks() -> None:
    """Signed requests, as a billing system sends them."""


def _addon(_ctx: Any, _param: Any, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, qty = value.partition("=")
        if not sep or not qty.isascii() or not qty.isdigit():
            raise click.BadParameter(f"{value!r}: use NAME=QUANTITY, e.g. extra_mailboxes=5")
        out[name] = int(qty)
    return out


def _source(name: str) -> SourceSettings:
    settings = root().settings
    src = settings.sources.get(name)
    if src is None:
        raise click.BadParameter(
            f'no source "{name}"; configured: {", ".join(settings.sources)}', param_hint="SOURCE"
        )
    return src


def _headers(src: SourceSettings, webhook_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(src.secrets[0], webhook_id, timestamp, body),
    }


def _post(target: str, src: SourceSettings, body: bytes, webhook_id: str) -> requests.Response:
    headers = _headers(src, webhook_id, body)
    try:
        return requests.post(target, data=body, headers=headers, timeout=(5, 60))
    except requests.RequestException as exc:
        raise click.ClickException(
            f"could not reach the bridge at {target}: {exc.__class__.__name__}; is it running "
            "(`make run`)?"
        ) from None


def _show(target: str, response: requests.Response, one_line: bool = False) -> None:
    """Print the answer; exit 1 on an error or a `failed` event."""
    try:
        answer = response.json()
        text = json.dumps(answer) if one_line else json.dumps(answer, indent=2)
    except ValueError:
        answer, text = {}, response.text[:500]
    click.echo(f"POST {target} -> HTTP {response.status_code}")
    click.echo(text)
    if response.status_code >= 400 or (
        isinstance(answer, dict) and answer.get("status") == "failed"
    ):
        sys.exit(1)


def derived_password(src: SourceSettings, webhook_id: str) -> str:
    """A password that meets the NMS policy, the same for the same source and id."""
    digest = hmac.new(
        decode_secret(src.secrets[0]), f"sample password {webhook_id}".encode(), hashlib.sha256
    ).digest()
    letters = "".join(c for c in base64.b64encode(digest).decode() if c.isalnum())
    return letters[:13] + "Aa1"


def first_sent_at(source: str, webhook_id: str) -> datetime:
    """When this id was first sent from here (now, the first time): a repeat of an id carries
    the same billing time, so the same body, as a billing system re-sending from its outbox."""
    key = f"{source} {webhook_id}"
    try:
        seen = json.loads(SENT_IDS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        seen = {}
    if not isinstance(seen, dict):
        seen = {}
    if isinstance(seen.get(key), str):
        try:
            return datetime.fromisoformat(seen[key])
        except ValueError:
            pass
    now = datetime.now(UTC).replace(microsecond=0)
    seen[key] = now.isoformat()
    try:
        SENT_IDS.parent.mkdir(parents=True, exist_ok=True)
        partial = SENT_IDS.with_suffix(".tmp")
        partial.write_text(json.dumps(seen, indent=1, sort_keys=True), encoding="utf-8")
        partial.replace(SENT_IDS)
    except OSError as exc:
        click.echo(
            f"note: could not remember --id {webhook_id} in {SENT_IDS} ({exc.strerror}); sending "
            "it again will carry another time, so another body",
            err=True,
        )
    return now


def current_package(
    url: str, source: str, src: SourceSettings, service: int
) -> tuple[int | None, dict[str, int]]:
    """The service's product and add-ons as the bridge's ledger has them (through the signed
    connector endpoint), or (None, {}) for a service the bridge does not know yet."""
    target = f"{url.rstrip('/')}/hooks/{source}/service"
    body = json.dumps({"service": service}).encode()
    response = _post(target, src, body, f"msg_{uuid.uuid4().hex}")
    if response.status_code == 404:
        return None, {}
    try:
        data = response.json()
        product = data.get("product")
        addons = {str(k): int(v) for k, v in (data.get("addons") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        data, product, addons = None, None, {}
    if response.status_code != 200 or not isinstance(data, dict):
        raise click.ClickException(
            f"could not read the current package of {source}:{service} from {target} "
            f"(HTTP {response.status_code}); is the bridge up to date?"
        )
    return (int(product) if str(product).isdigit() else None), addons


@hooks.command("send")
@click.argument("source")
@click.argument("action", type=click.Choice([a.value for a in Action]))
@click.option("--service", "service", type=int, required=True, help="Billing service id.")
@click.option(
    "--product",
    type=int,
    help="Billing product id (default: the service's current one; for a new service the "
    "first mapped one).",
)
@click.option(
    "--addon",
    "addons",
    multiple=True,
    callback=_addon,
    metavar="NAME=QTY",
    help="Add-on quantity; repeat for several. change_package keeps the add-ons not named.",
)
@click.option("--client", type=int, help="Client id (for transfer: the new owner).")
@click.option("--to-service", type=int, help="transfer only: move mail ownership to this service.")
@click.option(
    "--password",
    help="Password for create/change_password (default: random; with --id, derived from it).",
)
@URL_OPTION
@click.option(
    "--id",
    "webhook_id",
    help="webhook-id to send (default: a new one). The same id sends the same body again.",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the signed request as a curl command instead of sending it.",
)
@click.option("--show-secret", is_flag=True, help="With --print: show the signing secret too.")
def hooks_send(
    source: str,
    action: str,
    service: int,
    product: int | None,
    addons: dict[str, int],
    client: int | None,
    to_service: int | None,
    password: str | None,
    url: str,
    webhook_id: str | None,
    print_only: bool,
    show_secret: bool,
) -> None:
    """Sign a realistic sample event for SOURCE and post it to the bridge.

    \b
    bridge hooks send whmcs create --service 1001
    bridge hooks send whmcs suspend --service 1001 --id demo-1   (twice: a duplicate)
    bridge hooks send whmcs change_package --service 1001 --addon extra_mailboxes=3
    bridge hooks send whmcs create --service 1001 --print        (a curl command)
    """
    settings = root().settings
    src = _source(source)
    if show_secret and not print_only:
        raise click.UsageError("--show-secret goes with --print")
    if action == Action.CHANGE_PACKAGE.value:
        current_product, current_addons = current_package(url, source, src, service)
        product = product if product is not None else current_product
        addons = {**current_addons, **addons}
        if current_product is not None:
            click.echo(
                f"{source}:{service} has product {current_product}, add-ons "
                f"{_addons(current_addons)}; sending product {product}, add-ons {_addons(addons)}",
                err=True,
            )
    if product is None:
        mapped = list(settings.mappings.products.get(source, {}))
        product = int(mapped[0]) if mapped and mapped[0].isdigit() else 1
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    options: dict[str, Any] = {
        "product": product,
        "addons": addons,
        "client": client,
        "password": password,
        "to_service": to_service,
    }
    if webhook_id is not None:
        options["occurred_at"] = first_sent_at(source, webhook_id)
        options["password"] = password or derived_password(src, webhook_id)
    body = json.dumps(sample(src.kind, Action(action), service, **options)).encode()
    target = f"{url.rstrip('/')}/hooks/{source}"
    if print_only:
        _print_curl(target, src, msg_id, body, show_secret)
        return
    _show(target, _post(target, src, body, msg_id), one_line=True)


def _addons(addons: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(addons.items())) or "none"


def _print_curl(
    target: str, src: SourceSettings, webhook_id: str, body: bytes, show_secret: bool
) -> None:
    headers = _headers(src, webhook_id, body)
    secret = src.secrets[0] if show_secret else "whsec_*** (--show-secret shows it)"
    click.echo(
        f"# signed with the first secret of source {src.name}: {secret}\n"
        f"# the signature is accepted for {src.tolerance_s} s (tolerance_s) from now"
    )
    lines = [f"curl -sS -X POST {shlex.quote(target)}"]
    lines += [f"  -H {shlex.quote(f'{name}: {value}')}" for name, value in headers.items()]
    lines.append(f"  --data-binary {shlex.quote(body.decode())}")
    click.echo(" \\\n".join(lines))


@hooks.command("status")
@click.argument("source")
@URL_OPTION
def hooks_status(source: str, url: str) -> None:
    """Ask the bridge whether it can use the mail server, signed as SOURCE's connector.

    Calls POST /hooks/SOURCE/status (WHMCS's "Test Connection"): 200 when the bridge can
    reach and log in to the mail server, 503 with the reason otherwise.
    """
    src = _source(source)
    target = f"{url.rstrip('/')}/hooks/{source}/status"
    _show(target, _post(target, src, b"{}", f"msg_{uuid.uuid4().hex}"))


@hooks.command("service")
@click.argument("source")
@click.argument("service_id")
@URL_OPTION
def hooks_service(source: str, service_id: str, url: str) -> None:
    """Show one service as SOURCE's connector sees it (POST /hooks/SOURCE/service).

    State, product, add-ons, quota bundle, the last event and the customer's set-up details
    (host names, MX, SPF) that a client area shows.
    """
    src = _source(source)
    target = f"{url.rstrip('/')}/hooks/{source}/service"
    ref: int | str = int(service_id) if service_id.isdigit() else service_id
    body = json.dumps({"service": ref}).encode()
    _show(target, _post(target, src, body, f"msg_{uuid.uuid4().hex}"))
