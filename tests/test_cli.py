"""The `bridge` command (README.md, Commands), through click's runner; `hooks send` against
the app served by a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select

from bridge import migrate
from bridge.cli import cli
from bridge.db import make_engine
from bridge.lifecycle import EventStatus
from bridge.models import Event, Service
from tests.conftest import base_config


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def write_config(path: Path, database_url: str) -> Path:
    path.write_text(yaml.safe_dump(base_config(database_url)), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid config whose database is a SQLite file that does not exist yet."""
    return write_config(tmp_path / "bridge.yaml", f"sqlite:///{tmp_path / 'var' / 'bridge.db'}")


# --help everywhere --------------------------------------------------------------------------


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, (*path, name))


@pytest.mark.parametrize("path", list(command_paths(cli)), ids=lambda p: " ".join(("bridge", *p)))
def test_every_command_has_help(tmp_path, path):
    # --help must work without a config file, e.g. before the first install
    result = run("--config", str(tmp_path / "missing.yaml"), *path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    command: click.Command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    first_paragraph = (command.help or "").strip().split("\n\n")[0]
    assert first_paragraph, f"bridge {' '.join(path)} has no help text"
    assert " ".join(first_paragraph.split()) in " ".join(result.output.split())


def test_the_expected_commands_exist():
    paths = {" ".join(p) for p in command_paths(cli)}
    assert {"run", "db upgrade", "db current", "mappings check", "hooks send"} <= paths


def test_short_help_option():
    assert run("-h").exit_code == 0


# mappings check -----------------------------------------------------------------------------


def test_mappings_check_prints_the_resolved_tables(config_file):
    result = run("--config", str(config_file), "mappings", "check")
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "Tiers" in lines and "Products" in lines and "Add-ons (per unit)" in lines
    assert "tier domains domain_aliases aliases mailboxes storage_mb" in lines
    assert "agency 20 20 unlimited 200 512000" in lines
    assert "starter 1 1 10 5 5120" in lines
    assert "whmcs 3 agency" in lines
    assert "blesta 2 business" in lines
    assert "whmcs extra_storage_gb 0 0 0 0 1024" in lines
    assert lines[-1] == "mappings OK: 3 tiers, 5 products, 3 add-ons"


def test_mappings_check_json(config_file):
    result = run("--config", str(config_file), "mappings", "check", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"tiers", "products", "addons", "refused"}
    assert data["refused"] == []
    assert data["tiers"]["agency"]["aliases"] == "unlimited"
    assert data["products"]["whmcs"]["3"] == {
        "tier": "agency",
        "bundle": {
            "domains": 20,
            "domain_aliases": 20,
            "aliases": "unlimited",
            "mailboxes": 200,
            "storage_mb": 512000,
        },
    }
    assert data["products"]["blesta"]["1"]["bundle"]["mailboxes"] == 5
    assert data["addons"]["whmcs"]["extra_mailboxes"] == {
        "domains": 0,
        "domain_aliases": 0,
        "aliases": 0,
        "mailboxes": 1,
        "storage_mb": 1024,
    }


def test_config_comes_from_bridge_config(config_file, monkeypatch):
    monkeypatch.setenv("BRIDGE_CONFIG", str(config_file))
    result = run("mappings", "check", "--json")
    assert result.exit_code == 0, result.output
    assert "agency" in json.loads(result.output)["tiers"]


# db upgrade / db current --------------------------------------------------------------------


def head_revision() -> str | None:
    engine = make_engine("sqlite://")
    try:
        return migrate.current_and_head(engine)[1]
    finally:
        engine.dispose()


def test_db_upgrade_then_current(config_file, tmp_path):
    database = tmp_path / "var" / "bridge.db"
    head = head_revision()

    upgraded = run("--config", str(config_file), "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output == f"database at revision {head} (newest: {head})\n"
    assert database.exists()  # the directory was created too

    current = run("--config", str(config_file), "db", "current")
    assert current.exit_code == 0, current.output
    assert current.stdout == f"database at revision {head} (newest: {head})\n"
    assert current.stderr == ""


def test_db_current_on_an_empty_database_says_to_upgrade(config_file, tmp_path):
    (tmp_path / "var").mkdir()
    result = run("--config", str(config_file), "db", "current")
    assert result.exit_code == 1
    assert result.stdout.startswith("database at revision none (newest: ")
    assert "run `bridge db upgrade`" in result.stderr


def test_db_current_before_the_first_upgrade_is_clean(config_file):
    result = run("--config", str(config_file), "db", "current")
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "bridge db upgrade" in result.output


# hooks send ---------------------------------------------------------------------------------


@pytest.fixture
def live_config(tmp_path: Path, database_url: str) -> Path:
    """A config file with the same sources and secrets as the served app."""
    return write_config(tmp_path / "bridge.yaml", database_url)


def send(config: Path, *args: str) -> Result:
    return run("--config", str(config), "hooks", "send", *args)


def answer_of(result: Result) -> dict[str, Any]:
    first, _, rest = result.output.partition("\n")
    assert first.startswith("POST ")
    return json.loads(rest)


def test_hooks_send_posts_a_signed_event_to_a_live_bridge(live_url, live_config, db):
    result = send(live_config, "whmcs", "create", "--service", "1001", "--url", live_url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"POST {live_url}/hooks/whmcs -> HTTP 202\n")
    answer = answer_of(result)
    assert answer["status"] == "queued"
    assert answer["service"] == "1001"

    event = db.get(Event, answer["event_id"])
    assert event is not None
    assert (event.source, event.native_event, event.action) == ("whmcs", "CreateAccount", "create")
    assert event.status is EventStatus.QUEUED
    service = db.scalar(select(Service).where(Service.service_ref == "1001"))
    assert service.product_id == "1"  # the first mapped product
    assert service.password_hash.startswith("{SHA512-CRYPT}$6$")


def test_hooks_send_with_options(live_url, live_config, db):
    result = send(
        live_config,
        "blesta",
        "change_package",
        "--service",
        "77",
        "--product",
        "2",
        "--addon",
        "extra_mailboxes=3",
        "--id",
        "msg_cli_fixed_id",
        "--url",
        live_url + "/",
    )
    assert result.exit_code == 0, result.output
    event = db.get(Event, answer_of(result)["event_id"])
    assert event.webhook_id == "msg_cli_fixed_id"
    assert event.native_event == "Services.editAfter"
    assert event.service.addons == {"extra_mailboxes": 3}
    assert event.service.product_id == "2"


def test_hooks_send_exits_1_when_the_bridge_answers_failed(live_url, live_config):
    result = send(
        live_config, "whmcs", "create", "--service", "9", "--product", "99", "--url", live_url
    )
    assert result.exit_code == 1
    assert answer_of(result)["reason"] == "unmapped_product"


def test_hooks_send_to_an_unknown_source_lists_the_configured_ones(config_file):
    result = send(config_file, "hostbill", "create", "--service", "1001")
    assert result.exit_code == 2
    assert "Invalid value for SOURCE" in result.output
    (line,) = [line for line in result.output.splitlines() if 'no source "hostbill"' in line]
    assert sorted(line.split("configured: ")[1].split(", ")) == ["blesta", "whmcs"]


def test_hooks_send_to_an_unreachable_url_is_a_clean_error(config_file):
    with socket.socket() as probe:  # a loopback port nobody listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = send(config_file, "whmcs", "create", "--service", "1001", "--url", url)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output == (
        f"Error: could not reach the bridge at {url}/hooks/whmcs: ConnectionError; "
        "is it running (`make run`)?\n"
    )


@pytest.mark.parametrize("addon", ["extra_mailboxes=x", "extra_mailboxes", "extra_mailboxes=-1"])
def test_hooks_send_bad_addon_is_a_usage_error(config_file, addon):
    result = send(config_file, "whmcs", "create", "--service", "1001", "--addon", addon)
    assert result.exit_code == 2
    assert "Invalid value for '--addon'" in result.output
    assert "use NAME=QUANTITY" in result.output


def test_hooks_send_non_decimal_digit_addon_is_a_usage_error(config_file):
    result = send(
        config_file, "whmcs", "create", "--service", "1001", "--addon", "extra_mailboxes=\u00b2"
    )
    assert result.exit_code == 2, repr(result.exception)


@pytest.mark.parametrize(
    "args",
    [
        ["whmcs", "create"],
        ["whmcs", "delete", "--service", "1"],
        ["whmcs", "create", "--service", "x"],
    ],
    ids=["no-service", "unknown-action", "service-not-a-number"],
)
def test_hooks_send_usage_errors(config_file, args):
    assert send(config_file, *args).exit_code == 2
