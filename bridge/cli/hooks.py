"""`bridge hooks send`: a signed test webhook, as a billing system would send it."""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import click
import requests

from bridge.adapters.samples import sample
from bridge.cli.base import Context
from bridge.lifecycle import Action
from bridge.signature import sign


@click.group()
def hooks() -> None:
    """Webhook tools."""


def _addon(_ctx: Any, _param: Any, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, qty = value.partition("=")
        if not sep or not qty.isascii() or not qty.isdigit():
            raise click.BadParameter(f"{value!r}: use NAME=QUANTITY, e.g. extra_mailboxes=5")
        out[name] = int(qty)
    return out


@hooks.command("send")
@click.argument("source")
@click.argument("action", type=click.Choice([a.value for a in Action]))
@click.option("--service", "service", type=int, required=True, help="Billing service id.")
@click.option("--product", type=int, help="Billing product id (default: the first mapped one).")
@click.option(
    "--addon",
    "addons",
    multiple=True,
    callback=_addon,
    metavar="NAME=QTY",
    help="Add-on quantity; repeat for several.",
)
@click.option("--client", type=int, help="Client id (for transfer: the new owner).")
@click.option("--to-service", type=int, help="transfer only: move mail ownership to this service.")
@click.option("--password", help="Password for create/change_password (default: random).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Bridge base URL.")
@click.option("--id", "webhook_id", help="webhook-id to send (default: a new one).")
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
) -> None:
    """Sign a realistic sample event for SOURCE and post it to the bridge.

    \b
    Example:  bridge hooks send whmcs create --service 1001
    """
    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None
    settings = ctx.settings
    src = settings.sources.get(source)
    if src is None:
        raise click.BadParameter(
            f'no source "{source}"; configured: {", ".join(settings.sources)}', param_hint="SOURCE"
        )
    if product is None:
        mapped = list(settings.mappings.products.get(source, {}))
        product = int(mapped[0]) if mapped and mapped[0].isdigit() else 1
    options: dict[str, Any] = {
        "product": product,
        "addons": addons,
        "client": client,
        "password": password,
        "to_service": to_service,
    }
    body = json.dumps(sample(src.kind, Action(action), service, **options)).encode()
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(src.secrets[0], msg_id, timestamp, body),
    }
    target = f"{url.rstrip('/')}/hooks/{source}"
    try:
        response = requests.post(target, data=body, headers=headers, timeout=(5, 60))
    except requests.RequestException as exc:
        raise click.ClickException(
            f"could not reach the bridge at {target}: {exc.__class__.__name__}; is it running "
            "(`make run`)?"
        ) from None
    try:
        answer = response.json()
        text = json.dumps(answer, indent=2)
    except ValueError:
        answer, text = {}, response.text[:500]
    click.echo(f"POST {target} -> HTTP {response.status_code}")
    click.echo(text)
    if response.status_code >= 400 or answer.get("status") == "failed":
        sys.exit(1)
