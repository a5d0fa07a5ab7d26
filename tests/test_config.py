"""bridge.config: one YAML file, `${VAR}` from the environment, fail fast naming the key path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import cli
from bridge.config import config_path, load_config, parse_settings
from bridge.errors import ConfigError
from bridge.mappings import UNLIMITED, QuotaBundle
from tests.conftest import BLESTA_SECRET, WHMCS_SECRET, base_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def write(tmp_path: Path, content: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    file = tmp_path / name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    file.write_text(text, encoding="utf-8")
    return file


def tree() -> dict[str, Any]:
    return base_config(f"sqlite:///{Path('instance') / 'test.db'}")


def config_error(tmp_path: Path, content: dict[str, Any] | str, **environ: str) -> ConfigError:
    file = write(tmp_path, content)
    with pytest.raises(ConfigError) as excinfo:
        load_config(file, environ=environ)
    return excinfo.value


# A valid file -------------------------------------------------------------------------------


def test_the_example_file_loads_as_shipped(tmp_path):
    file = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, file)
    settings = load_config(file, environ={})
    assert settings.path == str(file)
    assert settings.database_url == "sqlite:///instance/bridge.db"
    assert settings.mailserver.base_url == "http://127.0.0.1:8025"
    assert settings.mailserver.password == "Sim-Master-Passw0rd"
    assert settings.mailserver.verify_tls is True
    assert settings.mailserver.unlimited_value == 1000000
    assert set(settings.sources) == {"whmcs", "blesta"}
    assert settings.sources["whmcs"].kind == "whmcs"
    assert settings.sources["whmcs"].tolerance_s == 300
    assert settings.mappings.tiers["agency"].aliases == UNLIMITED
    assert settings.mappings.products["whmcs"] == {"1": "starter", "2": "business", "3": "agency"}
    assert settings.mappings.addons["whmcs"]["extra_mailboxes"] == QuotaBundle(
        mailboxes=1, storage_mb=1024
    )
    assert settings.retry.schedule_s == (5, 300, 1800, 7200, 18000, 36000)
    assert settings.termination.grace_days == 7
    assert settings.intake.max_body_bytes == 262144


def test_the_example_file_takes_its_secrets_from_the_environment(tmp_path):
    file = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, file)
    environ = {
        "BRIDGE_DATABASE_URL": "postgresql+psycopg://bridge@db.internal:5432/bridge",
        "NMS_BASE_URL": "https://mail.example.net",
        "NMS_PASSWORD": "From-The-Env-Passw0rd",
        "WHMCS_WEBHOOK_SECRET": WHMCS_SECRET,
    }
    settings = load_config(file, environ=environ)
    assert settings.database_url == environ["BRIDGE_DATABASE_URL"]
    assert settings.mailserver.base_url == "https://mail.example.net"
    assert settings.mailserver.password == "From-The-Env-Passw0rd"
    assert settings.sources["whmcs"].secrets == (WHMCS_SECRET,)


def test_defaults_fill_the_optional_sections(tmp_path):
    data = tree()
    for section in ("intake", "admin", "products", "addons"):
        del data[section]
    settings = load_config(write(tmp_path, data), environ={})
    assert settings.intake.max_body_bytes == 262144
    assert settings.intake.inline_timeout_s == 20
    assert settings.retry.give_up_after_h == 72
    assert settings.mappings.products == {}
    assert settings.mailserver.rate_limit_per_s == 10


# ${VAR} interpolation -----------------------------------------------------------------------


def test_var_and_var_with_default_are_interpolated(tmp_path):
    data = tree()
    data["mailserver"].update(
        base_url="https://${NMS_HOST}:${NMS_PORT:-8443}",
        username="${NMS_USERNAME:-admin}",
        password="${NMS_PASSWORD}",
    )
    data["sources"]["whmcs"]["secrets"] = [
        "${WHMCS_SECRET}",
        "${WHMCS_OLD_SECRET:-" + BLESTA_SECRET + "}",
    ]
    data["admin"]["secret_key"] = "${BRIDGE_SECRET_KEY:-}"
    environ = {
        "NMS_HOST": "mail.example.net",
        "NMS_PASSWORD": "Env-Passw0rd-123",
        "WHMCS_SECRET": WHMCS_SECRET,
    }
    settings = load_config(write(tmp_path, data), environ=environ)
    assert settings.mailserver.base_url == "https://mail.example.net:8443"
    assert settings.mailserver.username == "admin"
    assert settings.mailserver.password == "Env-Passw0rd-123"
    assert settings.sources["whmcs"].secrets == (WHMCS_SECRET, BLESTA_SECRET)
    assert settings.admin.secret_key == ""  # an empty default is a value, not an error


def test_set_variable_wins_over_the_default(tmp_path):
    data = tree()
    data["mailserver"]["username"] = "${NMS_USERNAME:-admin}"
    settings = load_config(write(tmp_path, data), environ={"NMS_USERNAME": "master"})
    assert settings.mailserver.username == "master"


def test_an_empty_variable_falls_back_to_the_default(tmp_path):
    data = tree()
    data["mailserver"]["username"] = "${NMS_USERNAME:-admin}"
    settings = load_config(write(tmp_path, data), environ={"NMS_USERNAME": ""})
    assert settings.mailserver.username == "admin"


@pytest.mark.parametrize("environ", [{}, {"NMS_PASSWORD": ""}], ids=["unset", "empty"])
def test_a_missing_variable_names_the_key_and_the_variable(tmp_path, environ):
    data = tree()
    data["mailserver"]["password"] = "${NMS_PASSWORD}"
    error = config_error(tmp_path, data, **environ)
    assert error.reason == "config_invalid"
    assert error.message == "mailserver.password: environment variable NMS_PASSWORD is not set"


def test_a_missing_variable_in_a_list_names_the_index(tmp_path):
    data = tree()
    data["sources"]["blesta"]["secrets"] = ["${BLESTA_SECRET}"]
    error = config_error(tmp_path, data)
    assert (
        error.message == "sources.blesta.secrets.0: environment variable BLESTA_SECRET is not set"
    )


def test_the_process_environment_is_the_default(tmp_path, monkeypatch):
    data = tree()
    data["mailserver"]["password"] = "${BRIDGE_TEST_NMS_PASSWORD}"
    monkeypatch.setenv("BRIDGE_TEST_NMS_PASSWORD", "From-Os-Environ-1")
    assert load_config(write(tmp_path, data)).mailserver.password == "From-Os-Environ-1"


# Each wrong value names its key path --------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value

    change.__name__ = "set"
    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[leaf]

    change.__name__ = "delete"
    return change


def key_path_case(*values: Any) -> Any:
    return pytest.param(*values)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        # a missing required key
        (_delete("mailserver"), "mailserver: Missing data for required field"),
        (_delete("mailserver.username"), "mailserver.username: Missing data for required field"),
        (_delete("sources"), "sources: Missing data for required field"),
        # a wrong type or range
        (
            _set("mailserver.rate_limit_per_s", "fast"),
            "mailserver.rate_limit_per_s: Not a valid number",
        ),
        (_set("mailserver.base_url", "mail.example.net"), "mailserver.base_url: Not a valid URL"),
        (_set("mailserver.verify_tls", "maybe"), "mailserver.verify_tls: Not a valid boolean"),
        (
            _set("mailserver.unlimited_value", "lots"),
            "mailserver.unlimited_value: Not a valid integer",
        ),
        (
            _set("intake.max_body_bytes", 10),
            "intake.max_body_bytes: Must be greater than or equal to 1024",
        ),
        (
            _set("logging", {"level": "LOUD"}),
            "logging.level: Must be one of: DEBUG, INFO, WARNING, ERROR",
        ),
        (_set("retry", {"schedule_s": [5, "later"]}), "retry.schedule_s.1: Not a valid integer"),
        # an unknown key
        (_set("mailserver.colour", "blue"), "mailserver.colour: Unknown field"),
        (_set("mailservers", {}), "mailservers: Unknown field"),
        # mappings cross-references
        (
            _set("products.hostbill", {1: "starter"}),
            'products.hostbill: no source "hostbill" under sources:',
        ),
        (_set("addons.hostbill", {}), 'addons.hostbill: no source "hostbill" under sources:'),
        (
            _set("products.whmcs.9", "platinum"),
            'products.whmcs.9: names tier "platinum", which is not under tiers:',
        ),
        # inside a named entry of a dict section (sources, tiers, addons)
        key_path_case(
            _set("sources.whmcs.secrets", ["not-a-secret"]),
            'sources.whmcs.secrets.0: must start with "whsec_"',
        ),
        key_path_case(
            _set("sources.whmcs.kind", "hostbill"),
            "sources.whmcs.kind: must be one of: blesta, whmcs",
        ),
        key_path_case(
            _set("sources.whmcs.tolerance_s", 0),
            "sources.whmcs.tolerance_s: Must be greater than or equal to 1 and less",
        ),
        key_path_case(
            _delete("tiers.starter.mailboxes"),
            "tiers.starter.mailboxes: Missing data for required field",
        ),
        key_path_case(
            _set("tiers.starter.mailboxes", -1),
            'tiers.starter.mailboxes: must be a whole number >= 0 or "unlimited"',
        ),
        key_path_case(
            _set("addons.whmcs.nothing", {"mailboxes": 0}),
            "addons.whmcs.nothing: an add-on must increase at least one field",
        ),
    ],
)
def test_each_wrong_value_names_its_key_path(tmp_path, change, line):
    data = tree()
    change(data)
    error = config_error(tmp_path, data)
    assert error.reason == "config_invalid"
    assert error.message.startswith(f"{tmp_path / 'config.yaml'} is not valid:")
    lines = [entry.strip() for entry in error.message.splitlines()[1:]]
    assert any(entry.startswith(line) for entry in lines), lines


@pytest.mark.parametrize(
    ("change", "entry", "detail"),
    [
        (
            _set("sources.whmcs.secrets", ["not-a-secret"]),
            "sources.whmcs",
            'secrets.0: must start with "whsec_"',
        ),
        (
            _set("sources.whmcs.secrets", ["whsec_c2hvcnQ="]),
            "sources.whmcs",
            "secrets.0: the key must be at least 24 bytes (32 recommended)",
        ),
        (_set("sources.whmcs.secrets", []), "sources.whmcs", "secrets: list one secret"),
        (
            _set("sources.whmcs.kind", "hostbill"),
            "sources.whmcs",
            "kind: must be one of: blesta, whmcs",
        ),
        (
            _delete("tiers.starter.mailboxes"),
            "tiers.starter",
            "mailboxes: Missing data for required field",
        ),
        (
            _set("tiers.agency.aliases", "infinite"),
            "tiers.agency",
            'aliases: must be a whole number >= 0 or "unlimited"',
        ),
    ],
)
def test_errors_inside_named_entries_name_the_entry_and_the_field(tmp_path, change, entry, detail):
    data = tree()
    change(data)
    message = config_error(tmp_path, data).message
    (line,) = message.splitlines()[1:]
    assert line.strip().startswith(entry + ".")
    assert line.strip().endswith(detail)


def test_several_errors_are_reported_together(tmp_path):
    data = tree()
    data["mailserver"]["colour"] = "blue"
    del data["mailserver"]["username"]
    lines = config_error(tmp_path, data).message.splitlines()[1:]
    assert sorted(line.strip() for line in lines) == [
        "mailserver.colour: Unknown field",
        "mailserver.username: Missing data for required field",
    ]


def test_a_bad_source_name_is_reported(tmp_path):
    data = tree()
    data["sources"]["Billing EU"] = data["sources"].pop("blesta")
    del data["products"]["blesta"], data["addons"]["blesta"]
    assert "sources.Billing EU" in config_error(tmp_path, data).message


# The file itself ----------------------------------------------------------------------------


def test_invalid_yaml_gives_line_and_column(tmp_path):
    text = "database_url: sqlite:///x.db\nmailserver:\n  username: admin: extra\n"
    error = config_error(tmp_path, text)
    assert error.reason == "config_invalid"
    assert error.message == (
        f"{tmp_path / 'config.yaml'} line 3, column 18: mapping values are not allowed here"
    )


def test_a_tab_in_the_indentation_is_located(tmp_path):
    error = config_error(tmp_path, "mailserver:\n\tusername: admin\n")
    assert " line 2, column 1: " in error.message


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "plain words\n"])
def test_the_top_level_must_be_a_mapping(tmp_path, text):
    error = config_error(tmp_path, text)
    assert error.message == f"{tmp_path / 'config.yaml'}: the top level must be a mapping"


def test_a_missing_file_says_how_to_fix_it(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(missing, environ={})
    assert excinfo.value.reason == "config_missing"
    assert str(missing) in excinfo.value.message
    assert "copy config.example.yaml to config.yaml" in excinfo.value.message
    assert "BRIDGE_CONFIG" in excinfo.value.message


def test_an_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_config(tmp_path, environ={})
    assert excinfo.value.reason == "config_unreadable"
    assert str(tmp_path) in excinfo.value.message


# Which file ---------------------------------------------------------------------------------


def test_bridge_config_chooses_the_file(tmp_path):
    file = write(tmp_path, tree(), name="elsewhere.yaml")
    assert config_path({"BRIDGE_CONFIG": str(file)}) == file
    settings = load_config(environ={"BRIDGE_CONFIG": str(file)})
    assert settings.path == str(file)
    assert settings.mailserver.base_url == "http://127.0.0.1:9"


def test_without_bridge_config_config_yaml_then_the_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path({}) == Path("config.example.yaml")
    assert config_path({"BRIDGE_CONFIG": ""}) == Path("config.example.yaml")
    write(tmp_path, tree())
    assert config_path({}) == Path("config.yaml")


def test_bridge_config_naming_a_missing_file_is_not_silently_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, tree())  # a config.yaml that must not be used instead
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        load_config(environ={"BRIDGE_CONFIG": str(tmp_path / "nowhere.yaml")})


# The CLI on a bad config --------------------------------------------------------------------


def test_mappings_check_on_a_bad_config_exits_with_the_message(tmp_path):
    data = tree()
    data["mailserver"]["rate_limit_per_s"] = 50
    file = write(tmp_path, data)
    result = CliRunner().invoke(cli, ["--config", str(file), "mappings", "check"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert (
        "mailserver.rate_limit_per_s: must be between 0.1 and 15 calls per second" in result.output
    )


def test_mappings_check_on_a_missing_variable_exits_with_the_message(tmp_path):
    data = tree()
    data["admin"]["secret_key"] = "${BRIDGE_TEST_UNSET_SECRET_KEY}"
    file = write(tmp_path, data)
    result = CliRunner().invoke(cli, ["--config", str(file), "mappings", "check"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert (
        "admin.secret_key: environment variable BRIDGE_TEST_UNSET_SECRET_KEY is not set"
        in result.output
    )


def test_example_client_setup_matches_the_nms_layout() -> None:
    """The NMS Mail Portal is the hostname root; /home lists its webmail clients."""
    setup = load_config(EXAMPLE, {}).client_setup
    assert setup.admin_url == f"https://{setup.mail_hostname}/"
    assert setup.webmail_url == f"https://{setup.mail_hostname}/home"
    guide = (EXAMPLE.parent / "docs" / "connect-whmcs.md").read_text(encoding="utf-8")
    assert "/webmail/" not in guide and "/portal/" not in guide
    assert f"Webmail: {setup.webmail_url}" in guide


def test_usage_refresh_hours() -> None:
    assert load_config(EXAMPLE, {}).usage.refresh_h == 6
    tree = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    tree["usage"] = {"refresh_h": 0}
    with pytest.raises(ConfigError, match="usage.refresh_h"):
        parse_settings(tree, {})


# Mail-server safety settings ----------------------------------------------------------------


@pytest.mark.parametrize("rate", [15, 0.5])
def test_rate_limit_up_to_15_is_accepted(tmp_path, rate):
    data = tree()
    data["mailserver"]["rate_limit_per_s"] = rate
    assert load_config(write(tmp_path, data), environ={}).mailserver.rate_limit_per_s == rate


def test_rate_limit_above_15_is_refused_with_the_reason(tmp_path):
    data = tree()
    data["mailserver"]["rate_limit_per_s"] = 16
    message = config_error(tmp_path, data).message
    assert "mailserver.rate_limit_per_s: must be between 0.1 and 15 calls per second" in message
    assert "bans repeat offenders" in message


def test_defaults_rate_10_and_retry_after_cap_one_hour(tmp_path):
    settings = load_config(write(tmp_path, tree()), environ={})
    assert settings.mailserver.rate_limit_per_s == 10
    assert settings.mailserver.max_retry_after_s == 3600
    assert settings.mailserver.insecure_tls_i_understand is False


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8025", "http://localhost:8025", "http://[::1]:8025", "http://127.8.0.2"],
)
def test_plain_http_is_fine_on_loopback(tmp_path, url):
    data = tree()
    data["mailserver"]["base_url"] = url
    assert load_config(write(tmp_path, data), environ={}).mailserver.base_url == url


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"base_url": "http://mail.example.net"},
            "mailserver.base_url: plain http:// sends the MasterAdmin credentials unencrypted",
        ),
        (
            {"base_url": "http://10.0.0.5:8025"},
            "mailserver.base_url: plain http:// sends the MasterAdmin credentials unencrypted",
        ),
        (
            {"base_url": "https://mail.example.net", "verify_tls": False},
            "mailserver.verify_tls: false turns certificate checks off",
        ),
    ],
    ids=["http-remote-name", "http-remote-address", "verify-off"],
)
def test_weakened_tls_is_refused_without_the_switch(tmp_path, change, line):
    data = tree()
    data["mailserver"].update(change)
    message = config_error(tmp_path, data).message
    assert line in message
    assert "insecure_tls_i_understand" in message  # says how, for a test server

    data["mailserver"]["insecure_tls_i_understand"] = True
    settings = load_config(write(tmp_path, data), environ={})
    assert settings.mailserver.insecure_tls_i_understand is True


# Nested defaults, the one rule, reload, masking ----------------------------------------------


def test_a_default_may_hold_a_placeholder_expanded_only_when_used(tmp_path):
    data = tree()
    data["mailserver"]["base_url"] = "${NMS_BASE_URL:-http://127.0.0.1:${NMSIM_PORT:-8025}}"
    file = write(tmp_path, data)
    assert load_config(file, environ={}).mailserver.base_url == "http://127.0.0.1:8025"
    nmsim = load_config(file, environ={"NMSIM_PORT": "8125"})
    assert nmsim.mailserver.base_url == "http://127.0.0.1:8125"
    real = {"NMS_BASE_URL": "https://mail.example.net", "NMSIM_PORT": "8125"}
    assert load_config(file, environ=real).mailserver.base_url == "https://mail.example.net"
    data["mailserver"]["base_url"] = "${NMS_BASE_URL:-http://127.0.0.1:${NMSIM_PORT}}"
    file = write(tmp_path, data)  # an unset inner variable matters only when the default is used
    assert load_config(file, environ=real).mailserver.base_url == "https://mail.example.net"
    with pytest.raises(ConfigError, match="environment variable NMSIM_PORT is not set"):
        load_config(file, environ={})


def test_the_example_file_follows_nmsim_port(tmp_path):
    """`make run NMSIM_PORT=...` exports it: the bridge then talks to that simulator."""
    settings = load_config(EXAMPLE, environ={"NMSIM_PORT": "18125"})
    assert settings.mailserver.base_url == "http://127.0.0.1:18125"


def test_text_that_only_looks_like_a_placeholder_is_kept(tmp_path):
    data = tree()
    data["client_setup"] = {"mail_hostname": "a${b c${} ${1X} ${UNCLOSED:-x"}
    settings = load_config(write(tmp_path, data), environ={})
    assert settings.client_setup.mail_hostname == "a${b c${} ${1X} ${UNCLOSED:-x"


def test_the_loaded_settings_say_which_file_why_and_when(tmp_path, monkeypatch):
    from bridge.config import choose_config, describe

    monkeypatch.chdir(tmp_path)
    assert choose_config({}) == (Path("config.example.yaml"), "no config.yaml here, so the example")
    write(tmp_path, tree())
    assert choose_config({}) == (Path("config.yaml"), "config.yaml in the working directory")
    assert choose_config({"BRIDGE_CONFIG": "x.yaml"}) == (Path("x.yaml"), "named by BRIDGE_CONFIG")
    settings = load_config(environ={})
    assert (settings.path, settings.origin) == (
        "config.yaml",
        "config.yaml in the working directory",
    )
    assert settings.loaded_at is not None
    assert describe(settings).startswith(
        "config config.yaml (config.yaml in the working directory), loaded "
    )


def test_a_reload_takes_a_good_file_and_refuses_a_broken_one(tmp_path):
    from bridge.config import reload_config

    data = tree()
    file = write(tmp_path, data)
    first = load_config(file, environ={}, origin="named by BRIDGE_CONFIG")
    data["products"]["whmcs"][99] = "business"
    write(tmp_path, data)
    second, problem = reload_config(first, environ={})
    assert problem is None and second.mappings.products["whmcs"]["99"] == "business"
    assert second.origin == "named by BRIDGE_CONFIG"
    assert second.loaded_at is not None and first.loaded_at is not None
    assert second.loaded_at >= first.loaded_at
    write(tmp_path, "products: [broken\n")
    kept, problem = reload_config(second, environ={})
    assert kept is second
    assert problem is not None and str(file) in problem


def test_masked_settings_show_no_secret(tmp_path):
    from bridge.config import masked

    data = tree()
    data["database_url"] = "postgresql+psycopg://bridge:Db-Passw0rd@db.internal:5432/bridge"
    settings = load_config(write(tmp_path, data), environ={})
    shown = yaml.safe_dump(masked(settings))
    for secret in (
        WHMCS_SECRET,
        BLESTA_SECRET,
        "Sim-Master-Passw0rd",
        "test-secret-key",
        "Db-Passw0rd",
    ):
        assert secret not in shown
    view = masked(settings)
    assert view["mailserver"]["password"] == "***"
    assert view["sources"]["whmcs"]["secrets"] == ["whsec_***", "whsec_***"]
    assert view["database_url"] == "postgresql+psycopg://bridge:***@db.internal:5432/bridge"
    assert view["mappings"]["products"]["whmcs"]["1"] == "starter"


def test_an_unpadded_secret_is_accepted(tmp_path):
    data = tree()
    data["sources"]["whmcs"]["secrets"] = [WHMCS_SECRET, BLESTA_SECRET.rstrip("=")]
    settings = load_config(write(tmp_path, data), environ={})
    assert settings.sources["whmcs"].secrets[1] == BLESTA_SECRET.rstrip("=")


def test_a_source_name_needs_a_letter(tmp_path):
    """`/api/services/<source>/<billing id>` must never be read as an internal id route."""
    data = tree()
    data["sources"]["1234"] = data["sources"].pop("whmcs")
    assert "a source name needs a letter" in config_error(tmp_path, data).message
