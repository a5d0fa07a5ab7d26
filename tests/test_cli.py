"""The `bridge` command (README.md, Commands), through click's runner; `hooks send` against
the app served by a real HTTP server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
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


# hooks send --id: the same body again -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "action"),
    [("whmcs", "create"), ("whmcs", "change_password"), ("blesta", "terminate")],
)
def test_the_same_id_sends_the_same_body(
    live_url, live_config, tmp_path, monkeypatch, source, action
):
    monkeypatch.chdir(tmp_path)  # where instance/hooks-sent.json goes
    args = (source, action, "--service", "1001", "--id", f"demo-{action}", "--url", live_url)
    first = send(live_config, *args)
    assert first.exit_code == 0, first.output
    again = send(live_config, *args)
    assert again.exit_code == 0, again.output  # not 422 idempotency_conflict
    assert answer_of(again) == {**answer_of(first), "duplicate": True}
    other = send(live_config, *args[:-4], "--id", "another-id", "--url", live_url)
    assert answer_of(other)["event_id"] != answer_of(first)["event_id"]
    assert (tmp_path / "instance" / "hooks-sent.json").exists()


def test_a_changed_body_under_the_same_id_is_still_a_conflict(
    live_url, live_config, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    send(live_config, "whmcs", "create", "--service", "5", "--id", "x-1", "--url", live_url)
    changed = send(
        live_config,
        "whmcs",
        "create",
        "--service",
        "5",
        "--id",
        "x-1",
        "--product",
        "2",
        "--url",
        live_url,
    )
    assert changed.exit_code == 1
    assert "idempotency_conflict" in changed.output


def test_the_password_for_an_id_is_derived_and_meets_the_policy(live_config):
    from bridge.cli.hooks import derived_password
    from bridge.config import load_config
    from bridge.passwords import check_and_hash

    src = load_config(live_config).sources["whmcs"]
    password = derived_password(src, "demo-1")
    assert password == derived_password(src, "demo-1") != derived_password(src, "demo-2")
    check_and_hash(password)  # raises when the NMS policy refuses it


# hooks send --print ---------------------------------------------------------------------------


def test_print_gives_a_curl_command_that_works_without_showing_the_secret(
    live_url, live_config, db
):
    from tests.conftest import WHMCS_SECRET

    printed = send(live_config, "whmcs", "create", "--service", "31", "--url", live_url, "--print")
    assert printed.exit_code == 0, printed.output
    assert WHMCS_SECRET not in printed.output and "whsec_***" in printed.output
    assert db.scalar(select(Event).where(Event.service_ref == "31")) is None  # not sent
    command = printed.output
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "queued"
    assert db.scalar(select(Event).where(Event.service_ref == "31")) is not None

    shown = send(live_config, "whmcs", "create", "--service", "31", "--print", "--show-secret")
    assert WHMCS_SECRET in shown.output
    alone = send(live_config, "whmcs", "create", "--service", "31", "--show-secret")
    assert alone.exit_code == 2 and "--show-secret goes with --print" in alone.output


# the connector endpoints ------------------------------------------------------------------------


def test_hooks_status_says_why_the_mail_server_cannot_be_used(live_url, live_config):
    result = run("--config", str(live_config), "hooks", "status", "whmcs", "--url", live_url)
    assert result.exit_code == 1
    assert result.output.startswith(f"POST {live_url}/hooks/whmcs/status -> HTTP 503\n")
    assert answer_of(result)["error"] == "mailserver_unreachable"


def test_hooks_service_and_a_package_change_that_keeps_what_is_not_named(live_url, live_config, db):
    def service(*args: str) -> Result:
        return run("--config", str(live_config), "hooks", "service", *args, "--url", live_url)

    unknown = service("whmcs", "4242")
    assert unknown.exit_code == 1 and answer_of(unknown)["error"] == "unknown_service"
    send(
        live_config,
        "whmcs",
        "create",
        "--service",
        "42",
        "--product",
        "2",
        "--addon",
        "extra_storage_gb=2",
        "--url",
        live_url,
    )
    shown = service("whmcs", "42")
    assert shown.exit_code == 0, shown.output
    assert (answer_of(shown)["product"], answer_of(shown)["addons"]) == (
        "2",
        {"extra_storage_gb": 2},
    )

    changed = send(
        live_config,
        "whmcs",
        "change_package",
        "--service",
        "42",
        "--addon",
        "extra_mailboxes=3",
        "--url",
        live_url,
    )
    assert changed.exit_code == 0, changed.output
    assert (
        "whmcs:42 has product 2, add-ons extra_storage_gb=2; sending product 2, add-ons "
        "extra_mailboxes=3, extra_storage_gb=2"
    ) in changed.stderr
    row = db.scalar(select(Service).where(Service.service_ref == "42"))
    assert (row.product_id, row.addons) == ("2", {"extra_storage_gb": 2, "extra_mailboxes": 3})

    send(
        live_config,
        "whmcs",
        "change_package",
        "--service",
        "42",
        "--product",
        "3",
        "--url",
        live_url,
    )
    row = db.scalar(select(Service).where(Service.service_ref == "42"))
    assert (row.product_id, row.addons) == ("3", {"extra_storage_gb": 2, "extra_mailboxes": 3})

    fresh = send(
        live_config,
        "whmcs",
        "change_package",
        "--service",
        "43",
        "--addon",
        "extra_mailboxes=1",
        "--url",
        live_url,
    )
    assert fresh.exit_code == 0, fresh.output  # a service the bridge does not know yet
    row = db.scalar(select(Service).where(Service.service_ref == "43"))
    assert (row.product_id, row.addons) == ("1", {"extra_mailboxes": 1})


# which config: --version, config show -----------------------------------------------------------


def test_version_and_config_show_name_the_file_and_why(tmp_path, monkeypatch, database_url):
    from tests.conftest import WHMCS_SECRET

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    version = run("--version")
    assert version.exit_code == 0, version.output
    assert version.output.splitlines()[0].startswith("bridge ")
    assert version.output.splitlines()[1] == (
        "config: config.example.yaml (no config.yaml here, so the example, not found)"
    )
    write_config(tmp_path / "config.yaml", database_url)
    assert run("--version").output.splitlines()[1] == (
        "config: config.yaml (config.yaml in the working directory)"
    )
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "config.yaml"))
    assert "(named by BRIDGE_CONFIG)" in run("--version").output
    assert "(named by --config)" in run("--config", "config.yaml", "--version").output

    shown = run("config", "show")
    assert shown.exit_code == 0, shown.output
    first, _, rest = shown.output.partition("\n")
    assert first.startswith(
        f"# config {tmp_path / 'config.yaml'} (named by BRIDGE_CONFIG), loaded "
    )
    assert yaml.safe_load(rest)["sources"]["whmcs"]["secrets"] == ["whsec_***", "whsec_***"]
    assert WHMCS_SECRET not in shown.output and "Sim-Master-Passw0rd" not in shown.output
    as_json = json.loads(run("config", "show", "--json").output)
    assert as_json["origin"] == "named by BRIDGE_CONFIG"
    assert as_json["settings"]["mailserver"]["password"] == "***"


# make run: ports ---------------------------------------------------------------------------------


def test_check_ports_names_the_variable_to_change():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run("check-ports", f"BRIDGE_PORT={taken}", "NMSIM_PORT=1")
        assert result.exit_code == 1
        assert f"port {taken} on 127.0.0.1 is already in use" in result.output
        assert "choose another port with BRIDGE_PORT, e.g. make run BRIDGE_PORT=" in result.output
    same = run("check-ports", "BRIDGE_PORT=8100", "NMSIM_PORT=8100")
    assert same.exit_code == 1 and "BRIDGE_PORT and NMSIM_PORT are both 8100" in same.output
    assert run("check-ports", "NMSIM_PORT=x").exit_code == 1


def test_make_run_stops_before_starting_anything_when_a_port_is_taken(tmp_path):
    root = Path(__file__).resolve().parents[1]
    for name in (".venv", "Makefile", "requirements.txt", "pyproject.toml", "config.example.yaml"):
        (tmp_path / name).symlink_to(root / name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        done = subprocess.run(
            ["make", "run", f"NMSIM_PORT={taken}", "BRIDGE_PORT=1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert "choose another port with NMSIM_PORT" in done.stderr
    assert not (tmp_path / "instance").exists()  # nothing migrated, nothing started


# no None for people -------------------------------------------------------------------------------


def test_no_none_in_cli_output(live_url, live_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok = answer_of(send(live_config, "whmcs", "create", "--service", "77", "--url", live_url))
    bad = answer_of(
        send(
            live_config, "whmcs", "create", "--service", "78", "--product", "99", "--url", live_url
        )
    )
    outputs = [
        run("--config", str(live_config), *args)
        for args in (
            ("services", "show", "whmcs", "77"),
            ("services", "show", "whmcs", "78"),
            ("events", "list"),
            ("events", "show", str(ok["event_id"])),
            ("events", "show", str(bad["event_id"])),
            ("reconcile", "whmcs", "77", "--dry-run"),
            ("config", "show"),
            ("--version",),
        )
    ]
    for result in outputs:
        assert "None" not in result.output, result.output
    shown = outputs[0].output
    assert "tier: starter" in shown and "addons: none" in shown and "last_reason: -" in shown
    assert f"event {bad['event_id']}: create whmcs:78: failed" in outputs[4].output


def test_the_systemd_units_check_the_config_before_they_reload():
    root = Path(__file__).resolve().parents[1]
    for unit in ("mailbridge-web.service", "mailbridge-worker.service"):
        lines = (root / "deploy" / unit).read_text(encoding="utf-8").splitlines()
        reload = [line.split("=", 1)[1] for line in lines if line.startswith("ExecReload=")]
        assert reload == [
            "/opt/mailbridge/.venv/bin/bridge mappings check",
            "/bin/kill -HUP $MAINPID",
        ], unit


def test_git_ignores_the_local_config_and_instance():
    """config.yaml holds secrets, instance/ the database: neither may slip into a commit."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        ["git", "check-ignore", "config.yaml", "instance/bridge.db", "instance/hooks-sent.json"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.stdout.split() == ["config.yaml", "instance/bridge.db", "instance/hooks-sent.json"]
